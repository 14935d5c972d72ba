"""The import graph keeps the one-way flow of ``../shared/DESIGN.md``: no new import circles.

Every import counts, the ones inside functions included (grimp reads them all): a circle
hidden in a function body still means neither side can be understood or tested alone.
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")
nx = pytest.importorskip("networkx")

FLOW = ("meddx.training", "meddx.inference", "meddx.models", "meddx.modalities", "meddx.tasks", "meddx.outputs",
        "meddx.packaging", "meddx.evaluation", "meddx.preprocess", "meddx.cli")
"""Packages that must take part in no import circle at all (issue 19: training, inference, the registries)."""

KNOWN = {
    frozenset({"meddx.data._entries", "meddx.data.catalogue"}),
    frozenset({"meddx.privacy.deid", "meddx.privacy.records"}),
    frozenset({"meddx.signals.ood", "meddx.signals.package", "meddx.signals.window_head"}),
    frozenset({"meddx.service.api", "meddx.service.drift", "meddx.service.web"}),
}
"""Circles left to remove (each a registry that imports its registrants, or a refit helper that calls up);
a circle not listed here fails the test, and a listed one that is gone must be deleted from the list."""


@pytest.fixture(scope="module")
def cycles() -> list[frozenset[str]]:
    graph = grimp.build_graph("meddx")
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    return [frozenset(c) for c in nx.strongly_connected_components(g) if len(c) > 1]


def test_the_flow_packages_take_part_in_no_import_circle(cycles: list[frozenset[str]]) -> None:
    bad = [sorted(c) for c in cycles if any(m == p or m.startswith(p + ".") for m in c for p in FLOW)]
    assert not bad, f"import circles through training/inference/registries: {bad}"


def test_no_import_circle_beyond_the_known_ones(cycles: list[frozenset[str]]) -> None:
    new = [sorted(c) for c in cycles if c not in KNOWN]
    assert not new, f"new import circles: {new}"
    gone = [sorted(c) for c in KNOWN if c not in cycles]
    assert not gone, f"these circles are gone: delete them from KNOWN: {gone}"


def test_inference_never_imports_training() -> None:
    graph = grimp.build_graph("meddx")
    chains = graph.find_shortest_chains(importer="meddx.inference", imported="meddx.training")
    assert not chains, f"meddx.inference reaches meddx.training through {sorted(chains)[:3]}"
