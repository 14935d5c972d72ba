"""Similar-case retrieval benchmark: quality, fuzzy vs IVF, scale, and the duplicate finder.

``python -m bench.retrieval`` runs every part and writes ``bench/results/retrieval.json`` (a list of rows
``{set, method, map_at_5, precision_at_10, recall_at_10, p50_ms, p99_ms, ...}``) and ``retrieval.md``.
``--parts quality,ann,scale,duplicates`` runs some parts; each part keeps its rows in
``bench/runs/retrieval/<part>.json`` and the table is assembled from every part there.

* **quality**: mAP@5 and precision@10 (relevant = same label) with 95% bootstrap CIs over queries; gallery
  the training split, queries the test split. BreastMNIST and PneumoniaMNIST at 28 px (official splits);
  brain MRI (253 images) split 70/30 by the data layer's near-duplicate groups (seed 0, :func:`brain_split`),
  its package trained by ``meddx train`` on the training side only. Methods: the meddx package's backbone
  (``meddx train`` defaults), the same architecture with random weights (from scratch, untrained), raw
  pixels, and the package with options chosen on validation queries (MedMNIST: the val split; brain:
  leave-one-group-out on the training gallery), never on test: test-time flips, every ensemble member,
  query expansion and re-ranking by agreement of the classifier's predicted class probabilities.
* **ann**: fuzzy c-means index vs FAISS IVF vs exact on real PneumoniaMNIST features tiled with noise:
  each swept to the cheapest setting with recall@10 ≥ 0.95 against exact search, latency in the same run.
* **scale**: ``--scale-n`` (default 1,000,000) vectors, real features tiled with noise; HNSW through
  meddx's interface vs the raw FAISS index (same object, same queries, same run), one thread.
* **duplicates**: the finder's pairwise recall/precision against the brain set's near-duplicate groups
  computed by the data layer (:func:`meddx.data.splits.near_duplicate_groups`), and train/test
  near-duplicate pairs of every set.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RUNS, command_line, machine, write_results

BRAIN = "brain-tumor-mri-navoneel"
BRAIN_TEST_FRACTION = 0.3
PACKAGES = {"breastmnist": "/work/mdx/br-default", "pneumoniamnist": "/work/mdx/pn-default",
            BRAIN: "/work/mdx/retrieval/brain-cnn-small"}
ANCHORS = {"breastmnist": (0.83, 0.879), "pneumoniamnist": (0.86, 0.883)}
PARTS = ("quality", "ann", "scale", "duplicates")
OUT = RUNS / "retrieval"
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
"""Scale-run graph settings (build time on a shared 2-core CPU is the constraint)."""


# ---------------------------------------------------------------------------------------------- data


def brain_split() -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    """Train/test indices of the brain-MRI set, whole near-duplicate groups on one side (seed 0)."""
    from meddx.data.datasets import load_images
    from meddx.data.splits import group_train_val_test_split

    sample = load_images(BRAIN, size=128)
    _, labels = sample.splits["all"]
    groups = np.asarray(sample.meta["groups"]["all"])
    idx = group_train_val_test_split(labels, groups, val=0.0, test=BRAIN_TEST_FRACTION, seed=0)
    return {"train": np.sort(idx["train"]), "test": np.sort(idx["test"])}, groups, sample


def write_brain_split(root: str | Path) -> dict[str, int]:
    """Write the split as PNG folders with labels.csv, so ``meddx train ROOT/train`` sees only its side."""
    from PIL import Image

    idx, _, sample = brain_split()
    images, labels = sample.splits["all"]
    out = {}
    for part, rows in idx.items():
        folder = Path(root) / part
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["file,label"]
        for i in rows:
            Image.fromarray(images[i]).save(folder / f"case{i:03d}.png")
            lines.append(f"case{i:03d}.png,{sample.class_names[labels[i]]}")
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
        out[part] = len(rows)
    return out


def load_set(name: str) -> dict[str, Any]:
    """Images/labels of gallery (train), tuning queries (val, or None) and test queries, plus groups."""
    from meddx.data.datasets import load_images

    if name == BRAIN:
        idx, groups, sample = brain_split()
        images, labels = sample.splits["all"]
        return {"train": (images[idx["train"]], labels[idx["train"]]), "val": None,
                "test": (images[idx["test"]], labels[idx["test"]]), "train_groups": groups[idx["train"]]}
    sample = load_images(name)
    flat = {k: (np.asarray(v[0]), np.asarray(v[1]).reshape(len(v[1]), -1)[:, 0]) for k, v in sample.splits.items()}
    return {"train": flat["train"], "val": flat["val"], "test": flat["test"], "train_groups": None}


# --------------------------------------------------------------------------------------- embeddings


def _pipeline(model: str) -> Any:
    from meddx.inference import Pipeline

    return Pipeline.load(model)


def random_init_pipeline(trained: Any) -> Any:
    """The trained package's architecture and preprocessing with random weights (seed 0): from scratch."""
    import copy

    import torch

    from meddx.inference import Pipeline
    from meddx.models import create_model

    pkg = copy.deepcopy(trained.package)
    pkg.pop("members", None)
    torch.manual_seed(0)
    model = create_model(pkg["architecture"], num_classes=pkg["num_classes"], in_chans=pkg["preprocess"]["in_chans"],
                         head=pkg.get("head", "linear"), drop_rate=pkg.get("drop_rate")).eval()
    return Pipeline(trained.folder, pkg, members=[model])


def embed(pipeline: Any, images: np.ndarray, members: str = "first", flips: bool = False) -> np.ndarray:
    from meddx.retrieval.embed import Embedder, EmbeddingOptions

    return Embedder(pipeline, EmbeddingOptions(members, flips)).embed_images(images)


def probabilities(pipeline: Any, images: np.ndarray) -> np.ndarray:
    return pipeline.predict_arrays(images)


def pixels(images: np.ndarray, size: int) -> np.ndarray:
    from meddx.preprocess.arrays import prepare_arrays
    from meddx.retrieval.indexes import normalise

    x = prepare_arrays(images, size).mean(axis=1).reshape(len(images), -1)
    return normalise(x - x.mean(axis=1, keepdims=True))


# -------------------------------------------------------------------------------------------- search


def ranked(gallery: np.ndarray, queries: np.ndarray, k: int, *, qe: int = 0, rerank: float = 0.0,
           p_gallery: np.ndarray | None = None, p_queries: np.ndarray | None = None,
           exclude: np.ndarray | None = None, depth: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery ids per query through meddx's exact index, with optional query expansion
    (average the query with its ``qe`` nearest gallery vectors, search again) and re-ranking of the top
    ``depth`` by ``cosine + rerank · p_query·p_gallery``. ``exclude`` (bool ``(n_q, n_g)``) drops ids
    (leave-one-group-out tuning). Also returns per-query search latency in ms."""
    from meddx.retrieval.indexes import create_index, normalise

    index = create_index("flat", gallery.shape[1]).build(gallery)
    n_g = len(gallery)
    wide = min(n_g, max(depth, k) + (int(exclude.sum(axis=1).max()) if exclude is not None else 0))
    out, times = [], []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        sims, ids = index.search(q, wide)
        sims, ids = sims[0], ids[0]
        if exclude is not None:
            keep = ~exclude[i, ids]
            sims, ids = sims[keep], ids[keep]
        if qe:
            q2 = normalise(q + gallery[ids[:qe]].sum(axis=0))[0]
            sims, ids = index.search(q2, wide)
            sims, ids = sims[0], ids[0]
            if exclude is not None:
                keep = ~exclude[i, ids]
                sims, ids = sims[keep], ids[keep]
        if rerank and p_gallery is not None:
            head = ids[:depth]
            score = sims[:depth] + rerank * (p_gallery[head] @ p_queries[i])
            ids = np.concatenate([head[np.argsort(-score, kind="stable")], ids[depth:]])
        times.append((time.perf_counter() - start) * 1000)
        out.append(ids[:k])
    return np.stack(out), np.asarray(times)


def scores(ids: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray) -> dict[str, Any]:
    from meddx.retrieval.metrics import average_precision_at_k, bootstrap_ci, precision_at_k, relevance

    rel = relevance(ids, gallery_labels, query_labels)
    ap, p10 = average_precision_at_k(rel, 5), precision_at_k(rel, 10)
    return {"map_at_5": float(ap.mean()), "map_at_5_ci": bootstrap_ci(ap), "precision_at_10": float(p10.mean()),
            "precision_at_10_ci": bootstrap_ci(p10), "n_queries": int(len(query_labels))}


def _row(name: str, method: str, s: dict[str, Any], times: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
    row = {"set": name, "method": method, **s, "recall_at_10": 1.0}
    if times is not None:
        row.update(p50_ms=float(np.percentile(times, 50)), p99_ms=float(np.percentile(times, 99)))
    return {**row, **extra}


def quality(name: str, model: str | None = None) -> list[dict[str, Any]]:
    data = load_set(name)
    (g_img, g_lab), (t_img, t_lab) = data["train"], data["test"]
    trained = _pipeline(model or PACKAGES[name])
    size = int(trained.package["preprocess"]["size"])
    what = (f"{trained.package['name']} {trained.package['version']} (`meddx train`, "
            f"{trained.package.get('data', {}).get('split', '')})")
    rows = []
    g, t = embed(trained, g_img), embed(trained, t_img)
    ids, times = ranked(g, t, 10)
    rows.append(_row(name, "meddx backbone", scores(ids, g_lab, t_lab), times, model=what))
    scratch = random_init_pipeline(trained)
    ids, times = ranked(embed(scratch, g_img), embed(scratch, t_img), 10)
    rows.append(_row(name, "from-scratch backbone (random init, untrained)", scores(ids, g_lab, t_lab), times,
                     model=trained.package["architecture"]))
    ids, times = ranked(pixels(g_img, size), pixels(t_img, size), 10)
    rows.append(_row(name, f"raw pixels ({size} px, standardised)", scores(ids, g_lab, t_lab), times))

    # options chosen on validation queries, never on test
    ensemble = len(trained.member_folders()) > 1
    p_g = probabilities(trained, g_img)
    grid = [(m, f, qe, w) for m in (("first", "all") if ensemble else ("first",)) for f in (False, True)
            for qe in (0, 1, 2, 3) for w in (0.0, 0.25, 0.5, 1.0, 2.0)]
    cache: dict[tuple[str, bool], np.ndarray] = {}

    def gallery_vectors(m: str, f: bool) -> np.ndarray:
        if (m, f) not in cache:
            cache[(m, f)] = embed(trained, g_img, m, f)
        return cache[(m, f)]

    if data["val"] is not None:
        v_img, v_lab = data["val"]
        p_v, exclude, tune_on = probabilities(trained, v_img), None, f"val split (n={len(v_lab)})"
    else:  # leave one near-duplicate group out of the training gallery
        v_img, v_lab, p_v = g_img, g_lab, p_g
        groups = data["train_groups"]
        exclude, tune_on = groups[:, None] == groups[None], f"training gallery, leave-one-group-out (n={len(g_lab)})"
    val_cache: dict[tuple[str, bool], np.ndarray] = {}
    best, best_key = -1.0, None
    for m, f, qe, w in grid:
        if (m, f) not in val_cache:
            val_cache[(m, f)] = embed(trained, v_img, m, f)
        ids, _ = ranked(gallery_vectors(m, f), val_cache[(m, f)], 10, qe=qe, rerank=w, p_gallery=p_g, p_queries=p_v,
                        exclude=exclude)
        value = scores(ids, g_lab, v_lab)["map_at_5"]
        if value > best + 1e-9:
            best, best_key = value, (m, f, qe, w)
    m, f, qe, w = best_key
    ids, times = ranked(gallery_vectors(m, f), embed(trained, t_img, m, f), 10, qe=qe, rerank=w, p_gallery=p_g,
                        p_queries=probabilities(trained, t_img))
    rows.append(_row(name, "meddx backbone, options chosen on validation", scores(ids, g_lab, t_lab), times,
                     model=what, options={"members": m, "flips": f, "query_expansion": qe, "rerank_weight": w},
                     tuned_on=tune_on, tuning_map_at_5=best))
    return rows


# ------------------------------------------------------------------------------ approximate indexes


TILE_NOISE = 0.05
"""Norm of the noise added to each tiled copy: half the median distance of a real feature to its 10th neighbour
(0.095), so the tiled set keeps the real neighbourhoods instead of becoming uniform noise."""


def tiled(n: int, seed: int = 0, noise: float = TILE_NOISE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors and 500 queries: real PneumoniaMNIST package features (every split) plus Gaussian noise
    of norm about ``noise``, renormalised."""
    from meddx.retrieval.indexes import normalise

    path = OUT / "pneumonia_features.npy"
    if path.is_file():
        base = np.load(path)
    else:
        data = load_set("pneumoniamnist")
        images = np.concatenate([data[k][0] for k in ("train", "val", "test")])
        base = embed(_pipeline(PACKAGES["pneumoniamnist"]), images)
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(path, base)
    rng = np.random.default_rng(seed)
    d = base.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        rows = base[rng.integers(0, len(base), hi - lo)]
        out[lo:hi] = normalise(rows + noise * rng.standard_normal((hi - lo, d)).astype(np.float32) / np.sqrt(d))
    queries = normalise(base[rng.integers(0, len(base), 500)]
                        + noise * rng.standard_normal((500, d)).astype(np.float32) / np.sqrt(d))
    return out, queries


def _latencies(fn: Any, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, times = [], []
    for q in queries:
        start = time.perf_counter()
        ids.append(fn(q[None]))
        times.append((time.perf_counter() - start) * 1000)
    return np.concatenate(ids), np.asarray(times)


def ann(n: int) -> list[dict[str, Any]]:
    from meddx.retrieval.indexes import create_index
    from meddx.retrieval.metrics import recall_at_k

    x, q = tiled(n, seed=1)
    name = f"ann-{n // 1000}k"
    exact = create_index("flat", x.shape[1]).build(x)
    truth, flat_times = _latencies(lambda v: exact.search(v, 10)[1], q)
    rows = [{"set": name, "method": "faiss-flat (exact)", "map_at_5": None, "precision_at_10": None,
             "recall_at_10": 1.0, "p50_ms": float(np.percentile(flat_times, 50)),
             "p99_ms": float(np.percentile(flat_times, 99))}]
    start = time.perf_counter()
    ivf = create_index("ivf", x.shape[1]).build(x)
    ivf_build = time.perf_counter() - start
    start = time.perf_counter()
    fuzzy = create_index("fuzzy", x.shape[1], max_iter=30).build(x)
    fuzzy_build = time.perf_counter() - start
    sweeps = [("faiss-ivf", ivf, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], lambda v: ivf.set_nprobe(v), ivf_build,
               "nprobe"),
              ("meddx-fuzzy", fuzzy, [(0.5, 4), (0.8, 8), (0.9, 16), (0.95, 32), (0.99, 64), (0.999, 128),
                                      (0.9999, 256), (1.0, 512)], lambda v: fuzzy.set_probe(*v), fuzzy_build,
               "coverage, max_probe")]
    for method, index, values, setter, build_s, knob in sweeps:
        chosen, curve = None, []
        for value in values:
            setter(value)
            ids, times = _latencies(lambda v, index=index: index.search(v, 10)[1], q)
            recall = recall_at_k(ids, truth, 10)
            curve.append({knob: value, "recall_at_10": recall, "p50_ms": float(np.percentile(times, 50))})
            if recall >= 0.95:
                chosen = {"recall_at_10": recall, "p50_ms": float(np.percentile(times, 50)),
                          "p99_ms": float(np.percentile(times, 99)), knob: value}
                break
        chosen = chosen or {**curve[-1], "p99_ms": None, "note": "recall 0.95 not reached"}
        rows.append({"set": name, "method": method, "map_at_5": None, "precision_at_10": None, **chosen,
                     "build_s": build_s, "params": index.params, "sweep": curve})
    return rows


def scale(n: int) -> list[dict[str, Any]]:
    """HNSW at ``n`` vectors through meddx's interface and as the raw FAISS index, same run."""
    import faiss

    from meddx.retrieval.indexes import create_index
    from meddx.retrieval.metrics import recall_at_k

    x, q = tiled(n, seed=2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact = create_index("flat", x.shape[1]).build(x)
    truth = exact.search(q, 10)[1]  # batched ground truth
    del exact
    faiss.omp_set_num_threads(2)
    start = time.perf_counter()
    index = create_index("hnsw", x.shape[1], m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION).build(x)
    build_s = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    memory_mb = index.ntotal * (x.shape[1] * 4 + HNSW_M * 2 * 4) / 2**20  # vectors + level-0 links (FAISS layout)
    del x
    raw = index.index
    chosen = None
    for ef in (16, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        index.set_ef_search(ef)
        ids, _ = _latencies(lambda v: raw.search(v, 10)[1], q)
        recall = recall_at_k(ids, truth, 10)
        if recall >= 0.95:
            chosen = ef
            break
    chosen = chosen or 512
    index.set_ef_search(chosen)
    rows = []
    # whole passes, A B A B: interleaving query by query would hand the second search of a query a warm cache
    times: dict[str, list[float]] = {"meddx": [], "faiss-hnsw": []}
    found: dict[str, list[np.ndarray]] = {"meddx": [], "faiss-hnsw": []}
    calls = {"meddx": lambda v: index.search(v, 10)[1], "faiss-hnsw": lambda v: raw.search(v, 10)[1]}
    for rep in range(2):
        for method, call in calls.items():
            ids, t = _latencies(call, q)
            times[method] += t.tolist()
            if rep == 0:
                found[method].append(ids)
    meddx_ids, raw_ids, meddx_t, raw_t = found["meddx"], found["faiss-hnsw"], times["meddx"], times["faiss-hnsw"]
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    for method, ids, t in (("meddx", meddx_ids, meddx_t), ("faiss-hnsw", raw_ids, raw_t)):
        t = np.asarray(t)
        rows.append({"set": "scale-1m" if n == 1_000_000 else f"scale-{n}", "method": method, "map_at_5": None,
                     "precision_at_10": None, "recall_at_10": recall_at_k(np.concatenate(ids), truth, 10),
                     "p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                     "n": n, "build_s": build_s, "index_memory_mb": memory_mb, "peak_rss_growth_mb": rss_mb,
                     "ef_search": chosen, "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION,
                     "threads": "build 2, search 1", "tile_noise": TILE_NOISE,
                     "vectors": "real PneumoniaMNIST features (5,856) tiled with Gaussian noise, renormalised"})
    rows[0]["latency_ratio_p50"] = rows[0]["p50_ms"] / rows[1]["p50_ms"]
    rows[0]["latency_ratio_p99"] = rows[0]["p99_ms"] / rows[1]["p99_ms"]
    return rows


# -------------------------------------------------------------------------------------- duplicates


def duplicates() -> list[dict[str, Any]]:
    from meddx.data.datasets import load_images
    from meddx.retrieval.duplicates import find_duplicates, pair_scores, pixel_vectors

    sample = load_images(BRAIN, size=128)
    images, _ = sample.splits["all"]
    truth = np.asarray(sample.meta["groups"]["all"])
    rows = []
    vectors = pixel_vectors(images)
    for threshold in (0.9, 0.95, 0.97):
        found = find_duplicates(vectors, threshold)
        rows.append({"set": BRAIN, "method": f"duplicates: 32 px thumbnails, cosine > {threshold}", "map_at_5": None,
                     "precision_at_10": None, "recall_at_10": None, **pair_scores(found.groups, truth),
                     "groups_found": len(found.multi_groups()),
                     "groups_true": int((np.bincount(truth) > 1).sum())})
    brain = _pipeline(PACKAGES[BRAIN])
    model_vectors = embed(brain, images)
    for threshold in (0.95, 0.98, 0.99):
        found = find_duplicates(model_vectors, threshold)
        rows.append({"set": BRAIN, "method": f"duplicates: brain package embedding, cosine > {threshold}",
                     "map_at_5": None, "precision_at_10": None, "recall_at_10": None,
                     **pair_scores(found.groups, truth), "groups_found": len(found.multi_groups()),
                     "groups_true": int((np.bincount(truth) > 1).sum()),
                     "note": "the package saw the brain training side, so this is not held out for those images"})
    for name in ("breastmnist", "pneumoniamnist"):
        data = load_set(name)
        imgs = np.concatenate([data[k][0] for k in ("train", "val", "test")])
        splits = sum(([k] * len(data[k][1]) for k in ("train", "val", "test")), [])
        found = find_duplicates(pixel_vectors(imgs), 0.95, splits=splits)
        train_test = [p for p in found.cross_split if {splits[p[0]], splits[p[1]]} == {"train", "test"}]
        rows.append({"set": name, "method": "duplicates: 32 px thumbnails, cosine > 0.95", "map_at_5": None,
                     "precision_at_10": None, "recall_at_10": None, "pairs": len(found.pairs),
                     "train_test_pairs": len(train_test), "cross_split_pairs": len(found.cross_split)})
    idx, groups, _ = brain_split()
    found = find_duplicates(vectors, 0.95, splits=["train" if i in set(idx["train"]) else "test" for i in
                                                   range(len(images))])
    rows.append({"set": BRAIN, "method": "duplicates across the bench's brain train/test split (32 px, > 0.95)",
                 "map_at_5": None, "precision_at_10": None, "recall_at_10": None,
                 "cross_split_pairs": len(found.cross_split)})
    return rows


# ------------------------------------------------------------------------------------------ report


def _ci(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    ci = row.get(f"{key}_ci")
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def bars(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's bars, one line each, from the rows at hand."""
    out = ["## Bars", ""]
    for name in ("breastmnist", "pneumoniamnist"):
        mine = [r for r in rows if r["set"] == name and str(r["method"]).startswith("meddx backbone")]
        if mine:
            text = "; ".join(f"{r['method']} [{str(r.get('model', '')).split(' (')[0]}] {_ci(r, 'map_at_5')}"
                             for r in mine)
            best = max(r["map_at_5"] for r in mine)
            out.append(f"- {name} mAP@5 ≥ 0.88: {text}: {'met' if best >= 0.88 else 'not met'} (best point "
                       f"estimate {best:.3f}).")
    ann_rows = {r["method"]: r for r in rows if str(r["set"]).startswith("ann-")}
    if "meddx-fuzzy" in ann_rows and "faiss-ivf" in ann_rows:
        f, i = ann_rows["meddx-fuzzy"], ann_rows["faiss-ivf"]
        out.append(f"- fuzzy vs IVF at recall@10 ≥ 0.95: fuzzy {f['recall_at_10']:.3f} at p50 {f['p50_ms']:.3f} ms, "
                   f"IVF {i['recall_at_10']:.3f} at p50 {i['p50_ms']:.3f} ms.")
    scale_rows = [r for r in rows if str(r["set"]).startswith("scale")]
    if scale_rows:
        m = scale_rows[0]
        ok = m["recall_at_10"] >= 0.95 and m["latency_ratio_p50"] <= 1.5
        out.append(f"- scale ({m['n']:,} vectors): recall@10 {m['recall_at_10']:.3f}, meddx/FAISS p50 "
                   f"{m['latency_ratio_p50']:.2f}×, p99 {m['latency_ratio_p99']:.2f}×: {'met' if ok else 'not met'}.")
    dup = next((r for r in rows if r["method"] == "duplicates: 32 px thumbnails, cosine > 0.95"
                and r["set"] == BRAIN), None)
    if dup:
        out.append(f"- duplicate finder on the brain groups (default threshold 0.95): recall {dup['recall']:.3f}, "
                   f"precision {dup['precision']:.3f}.")
    return [*out, ""]


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# Similar-case retrieval", "", f"Command: `{info['command']}`", "",
             f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores (shared with other jobs), "
             f"{info['machine']['date']}. Times per part: {info['seconds']}.", "",
             *bars(rows),
             "## Quality (gallery = training split, queries = test split; relevant = same label)", "",
             "mAP@5 = mean over queries of Σ_{i≤5} P@i·rel_i / (relevant hits in the top 5); 95% CIs bootstrap "
             "over queries. Search latency per query on the exact index, one thread.", "",
             "| set | method | mAP@5 [95% CI] | P@10 [95% CI] | p50 / p99 ms | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("map_at_5") is None:
            continue
        notes = []
        if r.get("model"):
            notes.append(str(r["model"]))
        if r.get("options"):
            notes.append(f"options {r['options']} chosen on {r['tuned_on']} (mAP@5 there {r['tuning_map_at_5']:.3f})")
        lines.append(f"| {r['set']} | {r['method']} | {_ci(r, 'map_at_5')} | {_ci(r, 'precision_at_10')} | "
                     f"{r.get('p50_ms', 0):.2f} / {r.get('p99_ms', 0):.2f} | {'; '.join(notes)} |")
    for name, (anchor, best) in ANCHORS.items():
        lines.append(f"| {name} | anchor: Mahbod et al., ResNet-50 at 28 px | {anchor:.3f} (best published "
                     f"{best:.3f}) | – | – | goal ≥ 0.88 |")
    lines += ["", "Notes: \"meddx backbone\" is the package named in the notes (`meddx train` defaults, cnn-small "
              "from scratch; no `meddx pretrain` backbone was used). The BreastMNIST 3-member ensemble (`meddx train "
              "breastmnist --ensemble 3`) was trained after the single model's figure was known; its first member is "
              "the same network as the single package (seed 0), and its options were chosen on the 78 validation "
              "queries, so 0.881 against 0.880 is well inside the noise. The brain package was trained on the "
              "training side of the bench's grouped split only (`bench.retrieval.write_brain_split`); it is weak "
              "(out-of-fold AUC 0.80) and random weights beat it on mAP@5, not on P@10. Latencies are noisy: "
              "other jobs shared the 2 cores."]
    ann_rows = [r for r in rows if str(r["set"]).startswith("ann-")]
    if ann_rows:
        lines += ["", f"## Fuzzy c-means index vs FAISS IVF vs exact ({ann_rows[0]['set']}: real PneumoniaMNIST "
                  "features tiled with noise; each approximate index at its cheapest setting with recall@10 ≥ 0.95, "
                  "one thread, same run)", "",
                  "| method | recall@10 | p50 ms | p99 ms | setting | build s |", "|---|---|---|---|---|---|"]
        for r in ann_rows:
            setting = {k: r[k] for k in ("nprobe", "coverage, max_probe") if k in r}
            build = f"{r['build_s']:.1f}" if r.get("build_s") is not None else "–"
            p99 = f"{r['p99_ms']:.2f}" if r.get("p99_ms") is not None else "–"
            lines.append(f"| {r['method']} | {r['recall_at_10']:.3f} | {r['p50_ms']:.2f} | {p99} | "
                         f"{setting or '–'} | {build} |")
    scale_rows = [r for r in rows if str(r["set"]).startswith("scale")]
    if scale_rows:
        m = scale_rows[0]
        lines += ["", f"## Scale: {m['n']:,} vectors ({m['vectors']})", "",
                  f"HNSW M={m['m']}, efConstruction={m['ef_construction']}, efSearch={m['ef_search']} (smallest "
                  f"reaching recall@10 ≥ 0.95 on the 500 queries); build {m['build_s']:.0f} s on 2 threads; "
                  f"index memory ≈ {m['index_memory_mb']:.0f} MB "
                  f"(peak RSS growth {m['peak_rss_growth_mb']:.0f} MB); "
                  "500 queries one at a time, one thread, two passes each in the order meddx, FAISS, meddx, FAISS. "
                  "Tiled "
                  f"copies carry Gaussian noise of norm {m.get('tile_noise', TILE_NOISE)}.", "",
                  "| method | recall@10 | p50 ms | p99 ms |", "|---|---|---|---|"]
        for r in scale_rows:
            lines.append(f"| {r['method']} | {r['recall_at_10']:.3f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
        lines.append(f"\nmeddx / raw FAISS latency: p50 {m['latency_ratio_p50']:.2f}×, "
                     f"p99 {m['latency_ratio_p99']:.2f}× (goal ≤ 1.5×).")
    dup = [r for r in rows if str(r["method"]).startswith("duplicates")]
    if dup:
        lines += ["", "## Duplicate finder", "",
                  "Pairwise recall/precision of the groups found against the brain set's near-duplicate groups "
                  "from the data layer (normalised correlation > 0.95 at 64×64 on the original images).", "",
                  "| set | vectors / threshold | recall | precision | pairs true / found / matched "
                  "| groups true / found | cross-split pairs |", "|---|---|---|---|---|---|---|"]
        for r in dup:
            rec = f"{r['recall']:.3f}" if r.get("recall") is not None else "–"
            prec = f"{r['precision']:.3f}" if r.get("precision") is not None else "–"
            pairs = (f"{r['true_pairs']} / {r['found_pairs']} / {r['matched_pairs']}" if "true_pairs" in r
                     else f"– / {r.get('pairs', '–')} / –")
            groups = f"{r['groups_true']} / {r['groups_found']}" if "groups_true" in r else "–"
            cross = r.get("cross_split_pairs", "–")
            if "train_test_pairs" in r:
                cross = f"{cross} (train–test {r['train_test_pairs']})"
            lines.append(f"| {r['set']} | {r['method'].removeprefix('duplicates: ')} | {rec} | {prec} | {pairs} | "
                         f"{groups} | {cross} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="parts to run; assemble: only rewrite the table")
    parser.add_argument("--scale-n", type=int, default=1_000_000)
    parser.add_argument("--ann-n", type=int, default=100_000)
    parser.add_argument("--sets", default=f"breastmnist,pneumoniamnist,{BRAIN}")
    parser.add_argument("--model", action="append", default=[], metavar="SET=PACKAGE",
                        help="quality: use this package for a set instead of the default (kept beside it)")
    args = parser.parse_args(argv)
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    models = dict(item.split("=", 1) for item in args.model)
    jobs = [(f"quality-{name}" + ("-" + Path(models[name]).name if name in models else ""), "quality", name)
            for name in args.sets.split(",") if "quality" in args.parts.split(",")]
    jobs += [(part, part, None) for part in args.parts.split(",") if part not in ("quality", "assemble")]
    for stem, part, name in jobs:
        start = time.perf_counter()
        if part == "quality":
            rows = quality(name, models.get(name))
        elif part == "ann":
            rows = ann(args.ann_n)
        elif part == "scale":
            rows = scale(args.scale_n)
        elif part == "duplicates":
            rows = duplicates()
        else:
            raise SystemExit(f"unknown part {part!r}; choose from {PARTS}")
        payload = {"rows": rows, "seconds": time.perf_counter() - start, "command": command_line(),
                   "machine": machine()}
        (OUT / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
        print(f"{stem}: {payload['seconds']:.0f} s", flush=True)
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k not in ("sweep", "params")}, default=float), flush=True)
    stems = [p.stem for n in ("breastmnist", "pneumoniamnist", BRAIN)
             for p in sorted(OUT.glob(f"quality-{n}*.json"), key=lambda p: (len(p.stem), p.stem))]
    stems += list(PARTS[1:])
    parts = {p: json.loads((OUT / f"{p}.json").read_text()) for p in stems if (OUT / f"{p}.json").is_file()}
    keys = ("set", "method", "map_at_5", "precision_at_10", "recall_at_10", "p50_ms", "p99_ms")
    rows, seen = [], set()
    for r in (r for p in parts.values() for r in p["rows"]):
        key = (r["set"], r["method"], r.get("model"))  # baselines repeated by a run with another package
        if key not in seen:
            seen.add(key)
            rows.append({**{k: r.get(k) for k in keys}, **r})
    info = {"command": "; ".join(sorted({p["command"] for p in parts.values()})),
            "machine": machine(), "seconds": {k: round(v["seconds"]) for k, v in parts.items()}}
    write_results("retrieval", rows, markdown(rows, info))


if __name__ == "__main__":
    main()
