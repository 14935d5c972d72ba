"""The trust layer through the CLI: train options, predict with uncertainty and explanations, report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meddx.cli import main
from tests._factories import make_labelled_pngs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("trustcli")
    data = make_labelled_pngs(base / "imgs", n=48, size=24)
    run = base / "run"
    assert main(["train", str(data), "--model", "cnn-tiny", "--epochs", "6", "--lr", "0.01", "--drop-rate", "0.2",
                 "--calibration", "temperature", "--conformal-alpha", "0.2", "--target-risk", "0.1",
                 "--out", str(run), "--no-progress"]) == 0
    return run, data


def test_train_options_reach_the_package(trained: tuple[Path, Path]) -> None:
    package = json.loads((trained[0] / "package.json").read_text())
    assert package["drop_rate"] == 0.2
    assert package["trust"]["conformal"]["alpha"] == pytest.approx(0.2)
    assert package["trust"]["abstention"]["target_risk"] == pytest.approx(0.1)


def test_predict_with_uncertainty_and_explanation(trained: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run, data = trained
    png = sorted(data.glob("*.png"))[0]
    assert main(["predict", str(run), str(png), "--uncertainty", "mc-dropout", "--samples", "10",
                 "--explain", "gradcam", "--explain-dir", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["uncertainty"]["method"] == "mc-dropout" and result["uncertainty"]["samples"] == 10
    assert result["coverage"] == pytest.approx(0.8)
    explanation = result["explanation"]
    assert explanation["method"] == "gradcam" and Path(explanation["overlay"]).is_file()
    for key in ("sanity_spearman", "deletion_auc", "random_deletion_auc", "insertion_auc"):
        assert isinstance(explanation[key], float), key


def test_predict_refuses_an_unknown_method(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run, data = trained
    assert main(["predict", str(run), str(sorted(data.glob("*.png"))[0]), "--uncertainty", "laplace"]) == 2
    assert "Known:" in capsys.readouterr().err


def test_report_writes_html_and_json(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained
    hospital = make_labelled_pngs(tmp_path / "hospital", n=40, size=24, seed=5)
    out = tmp_path / "report"
    args = ["report", str(run), str(hospital), "--out", str(out), "--n-boot", "100", "--explain", "2",
            "--local-fraction", "0.3"]
    from meddx.report import find_chromium

    if find_chromium() or os.environ.get("CI"):
        args.append("--check")
    assert main(args) == 0
    html = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    for section in ("performance", "calibration", "operating-points", "uncertainty", "explanations", "checklist"):
        assert f'id="{section}"' in html, section
    assert report["evaluation"]["n"] == 40
    assert len(report["explanations"]) == 2 and report["local_recalibration"]["n_local"] == 12
    assert "src=\"data:image/png;base64," in html
    if "--check" in args:
        assert (out / "report.png").stat().st_size > 10_000
