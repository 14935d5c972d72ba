"""The four model kinds, all on (image embedding, clinical features) and all usable with a modality missing.

* ``image``: logistic regression on the standardised backbone embedding (a linear probe).
* ``clinical``: logistic regression on the prepared clinical features (imputed values +
  missingness indicators).
* ``late``: both branches, then a stacker (logistic regression on the two branch logits,
  fitted on inner out-of-fold logits, so on calibrated branch outputs) for rows with both
  modalities; a Platt-calibrated single branch when only one modality exists.
* ``intermediate``: gated (attention) fusion of the two embeddings, trained in PyTorch: each
  modality is encoded to ``hidden`` units, a gate scores both codes and a softmax over the
  *available* modalities weights them; modality dropout (the clinical code dropped with
  probability 0.3, the image code with 0.15) teaches it to predict from one modality. A small
  deep ensemble (``members`` seeds) gives the prediction and its spread.

The regularisation strength of every logistic regression is chosen by grouped inner CV
(patients never straddle inner folds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KINDS = ("image", "clinical", "late", "intermediate")
_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _inner_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    minority = int(min(np.bincount(y, minlength=2)))
    k = max(2, min(k, n_groups, minority))
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, groups))


def _lr(C: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_lr(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> tuple[Any, float]:
    """A logistic regression whose C maximises grouped inner-CV log-likelihood; returns (model, C)."""
    from sklearn.metrics import log_loss

    folds = _inner_folds(y, groups, 5, seed)
    best, best_C = np.inf, _CS[len(_CS) // 2]
    for C in _CS:
        losses = []
        for tr, va in folds:
            if len(np.unique(y[tr])) < 2:
                continue
            model = _lr(C).fit(X[tr], y[tr])
            losses.append(log_loss(y[va], model.predict_proba(X[va])[:, 1], labels=[0, 1]))
        if losses and np.mean(losses) < best:
            best, best_C = float(np.mean(losses)), C
    return _lr(best_C).fit(X, y), best_C


def oof_logits(X: np.ndarray, y: np.ndarray, groups: np.ndarray, C: float, seed: int) -> np.ndarray:
    out = np.zeros(len(y))
    for tr, va in _inner_folds(y, groups, 5, seed + 1):
        out[va] = _logit(_lr(C).fit(X[tr], y[tr]).predict_proba(X[va])[:, 1])
    return out


class Platt:
    """Logistic calibration of one logit (a stacker with one input)."""

    def __init__(self) -> None:
        self.model: Any = None

    def fit(self, z: np.ndarray, y: np.ndarray) -> Platt:
        from sklearn.linear_model import LogisticRegression

        Z = np.asarray(z, dtype=float).reshape(len(y), -1)
        self.model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(Z, y)
        return self

    def __call__(self, z: np.ndarray) -> np.ndarray:
        Z = np.asarray(z, dtype=float).reshape(len(z), -1)
        return self.model.predict_proba(Z)[:, 1]


class FusionModel:
    """One of :data:`KINDS`; ``predict_proba`` takes per-row availability masks."""

    def __init__(self, kind: str, seed: int = 0, epochs: int | None = None, members: int = 5, hidden: int = 16):
        if kind not in KINDS:
            from meddx.exceptions import ConfigError

            raise ConfigError(f"unknown fusion model {kind!r}", field="model", hint=f"Use one of: {', '.join(KINDS)}")
        self.kind, self.seed, self.members, self.hidden = kind, seed, members, hidden
        self.fixed_epochs = epochs
        self.max_epochs = 300
        self.epochs = epochs
        self.image_lr: Any = None
        self.clinical_lr: Any = None
        self.stacker: Platt | None = None
        self.image_cal: Platt | None = None
        self.clinical_cal: Platt | None = None
        self.nets: list[Any] = []
        self.e_mean: np.ndarray | None = None
        self.e_std: np.ndarray | None = None
        self.info: dict[str, Any] = {}

    @property
    def uses_image(self) -> bool:
        return self.kind != "clinical"

    @property
    def uses_clinical(self) -> bool:
        return self.kind != "image"

    # ----------------------------------------------------------------- fitting
    def fit(self, E: np.ndarray, X: np.ndarray, present: np.ndarray, y: np.ndarray, groups: np.ndarray) -> FusionModel:
        y = np.asarray(y, dtype=np.int64)
        groups = np.asarray(groups)
        if self.kind in ("image", "late"):
            self.image_lr, self.info["C_image"] = fit_lr(E, y, groups, self.seed)
        if self.kind in ("clinical", "late"):
            self.clinical_lr, self.info["C_clinical"] = fit_lr(X, y, groups, self.seed)
        if self.kind == "late":
            zi = oof_logits(E, y, groups, self.info["C_image"], self.seed)
            zc = oof_logits(X, y, groups, self.info["C_clinical"], self.seed)
            self.image_cal = Platt().fit(zi, y)
            self.clinical_cal = Platt().fit(zc, y)
            both = present.astype(bool)
            if both.sum() >= 10 and len(np.unique(y[both])) == 2:
                self.stacker = Platt().fit(np.stack([zi[both], zc[both]], 1), y[both])
            else:  # too few rows with clinical values: average the calibrated probabilities
                self.stacker = None
            if self.stacker is not None:
                coef = self.stacker.model.coef_[0]
                self.info["stacker_weights"] = {"image": float(coef[0]), "clinical": float(coef[1])}
        if self.kind == "intermediate":
            self._fit_intermediate(E, X, present, y, groups)
        return self

    def _fit_intermediate(self, E: np.ndarray, X: np.ndarray, present: np.ndarray, y: np.ndarray,
                          groups: np.ndarray) -> None:
        self.e_mean = E.mean(0)
        self.e_std = E.std(0) + 1e-6
        Es = (E - self.e_mean) / self.e_std
        if self.fixed_epochs is None:
            # the number of full-batch steps: best mean AUC over grouped inner folds (checked every 10 steps)
            curves = []
            for k, (tr, va) in enumerate(_inner_folds(y, groups, 3, self.seed + 7)):
                curves.append(_train_net(Es[tr], X[tr], present[tr], y[tr], self.hidden, self.seed * 1000 + 99 + k,
                                         self.max_epochs, (Es[va], X[va], present[va], y[va]))[1])
            mean_curve = np.nanmean(np.asarray(curves), 0)
            self.epochs = int(10 * (int(np.nanargmax(mean_curve)) + 1))
            self.info["inner_auc_by_10_steps"] = [round(float(v), 4) for v in mean_curve]
        else:
            self.epochs = self.fixed_epochs
        self.info["epochs"] = self.epochs
        self.nets = [_train_net(Es, X, present, y, self.hidden, self.seed * 1000 + m, self.epochs)[0]
                     for m in range(self.members)]

    # -------------------------------------------------------------- prediction
    def predict_members(self, E: np.ndarray | None, X: np.ndarray | None, present: np.ndarray,
                        has_image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(p, member_p)``: P(class 1) per row and, for ``intermediate``, each member's (members × n).

        ``present``: rows with clinical values; ``has_image``: rows with an image. A row
        needs the modality an ``image``/``clinical`` model uses (else NaN).
        """
        n = len(present)
        present = np.asarray(present, dtype=bool)
        has_image = np.asarray(has_image, dtype=bool)
        p = np.full(n, np.nan)
        if self.kind == "image":
            rows = has_image
            if rows.any():
                p[rows] = self.image_lr.predict_proba(E[rows])[:, 1]
            return p, None
        if self.kind == "clinical":
            p[:] = self.clinical_lr.predict_proba(X)[:, 1]
            return p, None
        if self.kind == "late":
            zi = _logit(self.image_lr.predict_proba(E)[:, 1]) if E is not None else np.zeros(n)
            zc = _logit(self.clinical_lr.predict_proba(X)[:, 1])
            both = has_image & present
            if both.any():
                if self.stacker is not None:
                    p[both] = self.stacker(np.stack([zi[both], zc[both]], 1))
                else:
                    p[both] = (self.image_cal(zi[both]) + self.clinical_cal(zc[both])) / 2
            only_img = has_image & ~present
            if only_img.any():
                p[only_img] = self.image_cal(zi[only_img])
            only_cli = ~has_image
            if only_cli.any():
                p[only_cli] = self.clinical_cal(zc[only_cli])
            return p, None
        import torch

        e = np.zeros((n, len(self.e_mean))) if E is None else (E - self.e_mean) / self.e_std
        e = torch.tensor(e, dtype=torch.float32)
        x = torch.tensor(X, dtype=torch.float32)
        mi = torch.tensor(has_image, dtype=torch.float32)
        mc = torch.tensor(present | ~has_image, dtype=torch.float32)  # no image: the clinical code must carry it
        members = []
        gates = []
        with torch.no_grad():
            for net in self.nets:
                logits, att = net(e, x, mi, mc)
                members.append(torch.sigmoid(logits).numpy())
                gates.append(att.numpy())
        member_p = np.stack(members)
        self.last_gates = np.mean(gates, 0)
        return member_p.mean(0), member_p

    def predict_proba(self, E: np.ndarray | None, X: np.ndarray | None, present: np.ndarray,
                      has_image: np.ndarray | None = None) -> np.ndarray:
        has_image = np.ones(len(present), bool) if has_image is None else has_image
        return self.predict_members(E, X, present, has_image)[0]

    # --------------------------------------------------------- serialisation
    def tensors(self) -> dict[str, Any]:
        out = {}
        for i, net in enumerate(self.nets):
            for k, v in net.state_dict().items():
                out[f"fusion.{i}.{k}"] = v.detach().clone().contiguous()
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["nets"] = []  # torch weights go to model.safetensors
        state["n_nets"] = len(self.nets)
        state["dims"] = ((len(self.e_mean), self.nets[0].cli[0].in_features) if self.nets else None)
        state.pop("last_gates", None)
        return state

    def load_tensors(self, tensors: dict[str, Any]) -> None:
        n = getattr(self, "n_nets", 0)
        self.nets = []
        for i in range(n):
            net = GatedFusion(self.dims[0], self.dims[1], self.hidden)
            prefix = f"fusion.{i}."
            net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            net.eval()
            self.nets.append(net)


def _train_net(e: np.ndarray, X: np.ndarray, present: np.ndarray, y: np.ndarray, hidden: int, seed: int,
               epochs: int, val: tuple | None = None) -> tuple[Any, list[float]]:
    """Full-batch AdamW with modality dropout; with ``val``, its AUC every 10 steps."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    e_t = torch.tensor(e, dtype=torch.float32)
    x_t = torch.tensor(X, dtype=torch.float32)
    m_cli = torch.tensor(present, dtype=torch.float32)
    target = torch.tensor(y, dtype=torch.float32)
    pos = max(float(y.sum()), 1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / pos))
    net = GatedFusion(e.shape[1], X.shape[1], hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
    curve: list[float] = []
    if val is not None:
        ve, vx, vp, vy = (torch.tensor(val[0], dtype=torch.float32), torch.tensor(val[1], dtype=torch.float32),
                          torch.tensor(val[2], dtype=torch.float32), val[3])
    for step in range(epochs):
        net.train()
        u = torch.rand(len(y), generator=gen)
        drop_cli = (u < 0.3) & (m_cli > 0)
        drop_img = (u > 0.85) & (m_cli > 0)
        logits, _ = net(e_t, x_t, (~drop_img).float(), m_cli * (~drop_cli).float())
        loss = loss_fn(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if val is not None and (step + 1) % 10 == 0:
            net.eval()
            with torch.no_grad():
                score = net(ve, vx, torch.ones(len(vy)), vp)[0].numpy()
            curve.append(float(roc_auc_score(vy, score)) if len(np.unique(vy)) == 2 else float("nan"))
    net.eval()
    return net, curve


def _gated_fusion_cls() -> Any:
    import torch
    from torch import nn

    class _GatedFusion(nn.Module):
        """Encode each modality, score both codes, softmax over the available ones, classify the mix."""

        def __init__(self, f_img: int, f_cli: int, hidden: int = 16) -> None:
            super().__init__()
            self.img = nn.Sequential(nn.Dropout(0.2), nn.Linear(f_img, hidden), nn.ReLU())
            self.cli = nn.Sequential(nn.Linear(f_cli, hidden), nn.ReLU())
            self.gate = nn.Linear(2 * hidden, 2)
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(hidden, 1))

        def forward(self, e: Any, x: Any, m_img: Any, m_cli: Any) -> tuple[Any, Any]:
            h_i = self.img(e) * m_img[:, None]
            h_c = self.cli(x) * m_cli[:, None]
            scores = self.gate(torch.cat([h_i, h_c], 1))
            mask = torch.stack([m_img, m_cli], 1)
            att = torch.softmax(scores.masked_fill(mask == 0, -1e4), 1)
            z = att[:, :1] * h_i + att[:, 1:] * h_c
            return self.head(z).squeeze(1), att

    return _GatedFusion


def GatedFusion(f_img: int, f_cli: int, hidden: int = 16) -> Any:  # noqa: N802 - a class factory (lazy torch)
    return _gated_fusion_cls()(f_img, f_cli, hidden)
