"""avprep.report: one self-contained HTML page about a prep folder or a shard folder."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, run_extract
from avprep.report import write_report
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class NestingChecker(HTMLParser):
    """Fails on an end tag that does not close the innermost open element: "valid-ish" HTML."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def read_page(path: Path) -> str:
    """The page's text, after checking it nests properly and fetches nothing."""
    page = path.read_text(encoding="utf-8")
    checker = NestingChecker()
    checker.feed(page)
    checker.close()
    assert checker.open == []
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    return page


def images(page: str) -> int:
    return len(re.findall(r'src="data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+"', page))


def summary_value(page: str, name: str) -> str:
    return re.search(rf"<td>{re.escape(name)}</td><td[^>]*>([^<]*)</td>", page).group(1)


@pytest.fixture(scope="module")
def prep(corpus, catalogue, tmp_path_factory) -> Path:
    """The corpus (6 talking heads) and one empty file, extracted with face analysis."""
    out = tmp_path_factory.mktemp("report_prep")
    run_extract(discover([corpus, catalogue[0] / "empty.mp4"]), out,
                ExtractConfig(morphable=False, audio_features=False), RunOptions(jobs=2))
    return out


def test_prep_report_shows_counts_failures_plots_and_sheets(prep, tmp_path):
    page = read_page(write_report(prep, tmp_path / "prep.html", max_sheets=2))
    for heading in ("Summary", "Failures", "Face statistics", "Durations and audio-video sync", "Videos per speaker",
                    "Contact sheets"):
        assert f"<h2>{heading}</h2>" in page
    assert (summary_value(page, "videos ok"), summary_value(page, "videos failed")) == ("6", "1")
    assert summary_value(page, "face tracks") != "not recorded"
    assert "<td>empty</td><td>empty file</td><td>the file is zero bytes</td>" in page
    # failure bars, face histograms, sync histograms, speaker bars and two contact sheets
    assert images(page) == 6
    assert page.count('class="sheet"') == 2


def test_shard_report_shows_recipe_fields_splits_and_samples(prep, tmp_path):
    shards = tmp_path / "shards"
    summary = run_shard(prep, shards, load_recipe("ear_sr"), max_count=4)
    page = read_page(write_report(shards, tmp_path / "shards.html"))
    assert "<h2>Recipe: ear_sr</h2>" in page
    for member in ("meta.json", "image.jpg", "lr.png", "audio.flac"):
        assert f"<td>{member}</td>" in page
    assert "<td>128 x 128 x 3</td>" in page
    for split, count in summary.samples.items():  # an empty split shows "-" for its shards
        shards_column = f'<td class="n">{count}</td>' if count else "<td>-</td>"
        assert re.search(rf'<td>{split}</td><td class="n">{count}</td>{shards_column}', page)
    shown = page.count('<figure class="sample">')
    assert 0 < shown and images(page) >= 2 + 2 * shown  # speaker bars, size histogram, crop and low-res per sample


def test_report_without_face_analysis_says_what_is_missing(corpus, tmp_path):
    prep = tmp_path / "prep"
    run_extract(discover([corpus / "hanks"]), prep, ExtractConfig(face=None, audio_features=False, morphable=False),
                RunOptions(jobs=2))
    page = read_page(write_report(prep, tmp_path / "report.html"))
    assert summary_value(page, "videos ok") == "2"
    assert summary_value(page, "face frames") == "not recorded"
    assert "Face statistics are absent" in page and "No contact sheets" in page


def test_report_on_a_prep_with_only_failures(catalogue, tmp_path):
    folder, _ = catalogue
    prep = tmp_path / "prep"
    run_extract(discover([folder / "empty.mp4", folder / "not_a_video.mp4"]), prep, ExtractConfig(), RunOptions())
    page = read_page(write_report(prep, tmp_path / "report.html"))
    assert (summary_value(page, "videos ok"), summary_value(page, "videos failed")) == ("0", "2")
    assert "not a video" in page and "Face statistics are absent" in page


def test_a_folder_that_is_neither_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a prep folder"):
        write_report(tmp_path, tmp_path / "report.html")
