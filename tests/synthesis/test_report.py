"""``meddx report`` for a restoration model: the SYNTHETIC banner, model / data / split, PSNR/SSIM per dose with
CIs and example triplets with the banner burnt into the restored picture, in one self-contained HTML file."""

from __future__ import annotations

import json
import re

import pytest

from tests.synthesis.test_restoration import tiny_restorer  # noqa: F401 - the module's tiny trained restorer


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cli_report_of_a_restorer(tiny_restorer, tmp_path, capsys):
    from meddx.cli import main
    from meddx.packaging.registry import read_package

    data, run = tiny_restorer
    out = tmp_path / "x.html"
    assert main(["report", str(run), str(data), "--out", str(out), "--n-boot", "50"]) == 0
    assert capsys.readouterr().out.strip().endswith("x.html")
    page = out.read_text(encoding="utf-8")
    assert page.index('id="synthetic-banner"') < page.index("<h1>")
    assert "SYNTHETIC images" in page and "not acquired" in page
    name = str(read_package(run)["name"])
    assert f"<title>meddx restoration report: {name} on {data} (test)</title>" in page
    assert "trained or tuned on" not in page and "Not a validation" not in page
    table = page[page.index('<table id="metrics">'):page.index("</table>")]
    for dose in ("0.25", "0.1", "0.05"):
        assert f"<th scope='row'>{dose}</th>" in table
    assert table.count("class='ci'") == 3 * 6  # every figure with its CI
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 3 * 2  # triplets, embedded
    assert page.count('class="synthetic"') == page.count("restored – SYNTHETIC") >= 2
    assert "src=\"http" not in page and "<script" not in page  # self-contained
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["synthetic"] is True and summary["split"] == "test" and "psnr@0.1" in summary["metrics"]


def test_report_on_training_images_says_so_and_refuses_unknown_options(tiny_restorer, tmp_path):
    from meddx.exceptions import ConfigError
    from meddx.modalities import call
    from meddx.packaging.registry import read_package
    from meddx.synthesis import package as P

    data, run = tiny_restorer
    package = read_package(run)
    html = P.report(run, package, str(data), out=tmp_path / "seen", n_boot=20, split="train", examples=1)
    page = html.read_text(encoding="utf-8")
    assert html == tmp_path / "seen" / "report.html" and (tmp_path / "seen" / "report.json").is_file()
    assert "trained or tuned on" in page and "Not a validation" in page
    assert page.count("restored – SYNTHETIC") == 1
    with pytest.raises(ConfigError, match="--explain does not apply"):
        call(P.report, run, package, str(data), out=tmp_path / "r", n_boot=20, split=None, what="restoration",
             explain=2)
