"""`srcli eval` reproduces published numbers; datasets download and extract safely; bad input is one line."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from srcli import datasets
from srcli.cli import main
from srcli.datasets import Archive, extract, prepare
from srcli.errors import DatasetError, DownloadError
from srcli.evaluate import evaluate
from srcli.metrics import psnr
from srcli.models import build
from srcli.options import UpscaleOptions
from srcli.resize import downscale, imresize
from srcli.weights import read_manifest, resolve

# --- published numbers -----------------------------------------------------------------------------

# The Bicubic column is the classic MATLAB luma pipeline (see srcli/evaluate.py). Measured residuals
# against the paper: Set5 +0.0014/+0.0022/+0.0007 dB, SSIM exact; Set14 -0.0082/-0.0095/+0.0001 dB,
# SSIM -0.0001/-0.0006/-0.0008 (Set14's column is VDSR's copy; SRCNN's 30.23/27.54/26.00 match to 0.002).
BICUBIC = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_bicubic_gives_the_papers_bicubic_column(benchmark_dir, set_name):
    dataset = prepare(set_name, benchmark_dir)
    for scale in (2, 3, 4):
        result = evaluate(dataset, scale)
        paper_psnr, paper_ssim = BICUBIC[(set_name, scale)]
        assert len(result.rows) == {"Set5": 5, "Set14": 14}[set_name]
        assert result.psnr == pytest.approx(paper_psnr, abs=0.01), (set_name, scale)
        assert result.ssim == pytest.approx(paper_ssim, abs=0.001), (set_name, scale)
        assert result.reference is not None and result.reference.psnr == paper_psnr


@pytest.mark.parametrize(("scale", "authors"), [(2, 37.65), (4, 31.45)])
def test_vdsr_set5_matches_its_authors(benchmark_dir, vdsr_checkpoint, scale, authors):
    # Measured (float-path bicubic of the published RGB LR, Y through the net, colour from bicubic,
    # quantized RGB scored): 37.608 / 33.759 / 31.446 at x2/x3/x4. The authors' 37.65 comes from the
    # classic luma-only degradation (37.653 measured that way). x3 is left out to keep CI short: each
    # scale runs the 20-layer net over Set5 at HR size on CPU (about 15 s alone, 35 s on a busy 2-core box).
    torch.set_num_threads(2)
    vdsr = resolve(str(vdsr_checkpoint), scale)
    result = evaluate(prepare("Set5", benchmark_dir), scale, vdsr.model, vdsr.spec, method=vdsr.name,
                      options=UpscaleOptions.for_scoring(device="cpu"))
    assert result.psnr == pytest.approx(authors, abs=0.05)
    assert result.reference is not None and result.reference.column == "VDSR"


def _shipped_scores() -> list[tuple[str, int, float, float]]:
    folder = Path(__file__).resolve().parent.parent / "weights"
    return [(entry.name, scale, score.psnr, score.ssim) for entry in read_manifest(folder)
            for scale, score in sorted(entry.metrics.get("Set5", {}).items())]


@pytest.mark.parametrize(("name", "scale", "psnr", "ssim"), _shipped_scores())
def test_shipped_models_score_what_their_manifest_says(benchmark_dir, name, scale, psnr, ssim):
    """The README and `srcli models` quote the manifest; it must be what `srcli eval` measures on these files."""
    torch.set_num_threads(2)
    shipped = resolve(name, scale)
    result = evaluate(prepare("Set5", benchmark_dir), scale, shipped.model, shipped.spec, method=name,
                      options=UpscaleOptions.for_scoring(device="cpu"))
    assert (result.method, len(result.rows)) == (name, 5)
    assert result.psnr == pytest.approx(psnr, abs=1e-3)
    assert result.ssim == pytest.approx(ssim, abs=1e-4)


# --- a tiny real dataset, a loopback server ---------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", pixels)[1].tobytes()


def _images(count: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    smooth = [cv2.GaussianBlur(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8), (5, 5), 2) for _ in range(count)]
    return {f"img{i}": image for i, image in enumerate(smooth)}


def _benchmark_files(scales=(2,), images=None) -> dict[str, bytes]:
    """The benchmark archive's real layout for Set5: HR and MATLAB-bicubic LR."""
    files = {}
    for name, hr in (images or _images()).items():
        files[f"benchmark/Set5/HR/{name}.png"] = _png(hr)
        for s in scales:
            files[f"benchmark/Set5/LR_bicubic/X{s}/{name}x{s}.png"] = _png(downscale(hr, s))
    return files


def _tar(files: dict[str | tarfile.TarInfo, bytes]) -> bytes:
    """A tar of these files; a TarInfo key is added as it is (links: its data is ignored)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            if info.isfile():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class _CountingHandler(SimpleHTTPRequestHandler):
    served: list[str]

    def do_GET(self) -> None:
        self.served.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL, requests seen)."""
    folder = tmp_path / "www"
    folder.mkdir()
    served: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()
    thread.join()


def test_prepare_downloads_verifies_and_extracts_the_benchmark_archive(tmp_path, loopback, monkeypatch):
    folder, base, served = loopback
    images = _images()
    payload = _tar(_benchmark_files(images=images))
    (folder / "benchmark.tar").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    monkeypatch.setitem(datasets.ARCHIVES, "benchmark.tar", Archive("benchmark.tar", "unused", md5, "."))
    monkeypatch.setenv("SRCLI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SRCLI_DATA", raising=False)

    seen = []
    dataset = prepare("set5", scales=(2, 3), mirror=base, progress=lambda done, total: seen.append(done))
    assert seen and seen[-1] == len(payload)
    assert dataset.root == tmp_path / "home" / "datasets" / "benchmark"
    pairs = list(dataset.pairs(2))
    assert [p.name for p in pairs] == ["img0", "img1"]
    assert np.array_equal(pairs[0].hr, images["img0"]) and not pairs[0].lr_generated
    x3 = list(dataset.pairs(3))  # the archive has no X3: made here by MATLAB bicubic
    assert x3[1].lr_generated and np.array_equal(x3[1].lr, downscale(images["img1"], 3))
    assert not (tmp_path / "home" / "datasets" / ".downloads" / "benchmark.tar").exists()
    assert not list((tmp_path / "home" / "datasets").glob(".extract-*"))

    prepare("Set5", mirror=base)  # cached: no second request
    assert served == ["/benchmark.tar"]

    md5_wrong = Archive("benchmark.tar", "unused", "0" * 32, ".")
    monkeypatch.setitem(datasets.ARCHIVES, "benchmark.tar", md5_wrong)
    monkeypatch.setenv("SRCLI_HOME", str(tmp_path / "other"))
    with pytest.raises(DownloadError, match="mismatch"):
        prepare("Set5", mirror=base)
    assert not (tmp_path / "other" / "datasets" / "benchmark").exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "zip-dotdot"])
def test_malicious_archive_is_refused_whole_and_nothing_is_written(tmp_path, kind):
    target, outside = tmp_path / "target", tmp_path / "outside"
    outside.mkdir()
    good = _benchmark_files()
    if kind == "zip-dotdot":
        path = tmp_path / "evil.zip"
        with zipfile.ZipFile(path, "w") as zipped:
            for name, data in good.items():
                zipped.writestr(name, data)
            zipped.writestr("../outside/evil.txt", b"pwned")
    else:
        bad = tarfile.TarInfo({"dotdot": "../outside/evil.txt", "absolute": str(outside / "evil.txt"),
                               "symlink": "benchmark/link", "hardlink": "benchmark/hard"}[kind])
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, str(outside)
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "../outside/evil.txt"
        path = tmp_path / "evil.tar"
        path.write_bytes(_tar({**good, bad: b"pwned"}))

    with pytest.raises(DatasetError, match="refused"):
        extract(path, target)
    assert not any(p.is_file() or p.is_symlink() for p in target.rglob("*"))
    assert list(outside.iterdir()) == []


# --- the command, and bad input ---------------------------------------------------------------------


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["srcli", "eval", *args])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json_reports_bicubic_set5_with_the_paper_beside_it(benchmark_dir, monkeypatch, capsys):
    code, out, _ = _cli(monkeypatch, capsys, "set5", "--model", "bicubic", "--scale", "2,4",
                        "--data-dir", str(benchmark_dir), "--json", "--per-image")
    assert code == 0
    results = json.loads(out)["results"]
    assert [(r["dataset"], r["scale"]) for r in results] == [("Set5", 2), ("Set5", 4)]
    assert results[0]["psnr"] == pytest.approx(33.66, abs=0.01)
    assert results[1]["reference"]["psnr"] == 28.42
    assert len(results[0]["rows"]) == 5 and {"name", "psnr", "ssim", "seconds"} <= set(results[0]["rows"][0])


def _layout(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "data"
    _write_tree(root, {name.removeprefix("benchmark/"): data for name, data in files.items()})
    return root


def _expect_one_line_error(monkeypatch, capsys, args, *needles: str) -> None:
    code, out, err = _cli(monkeypatch, capsys, *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_unknown_set_lists_the_known_ones(monkeypatch, capsys):
    _expect_one_line_error(monkeypatch, capsys, ["set6", "--model", "bicubic"],
                           "unknown dataset 'set6'", "Set5", "Urban100", "DIV2K-valid")


def test_wrong_layout_says_what_is_missing(tmp_path, monkeypatch, capsys):
    files = {name.replace("/HR/", "/hr_images/"): data for name, data in _benchmark_files().items()}
    root = _layout(tmp_path, files)
    _expect_one_line_error(monkeypatch, capsys, ["set5", "--model", "bicubic", "--data-dir", str(root)],
                           "no Set5/HR/ folder", "<Set>/HR/<name>.png")


def test_incomplete_lr_folder_names_the_missing_file(tmp_path, monkeypatch, capsys):
    files = _benchmark_files()
    del files["benchmark/Set5/LR_bicubic/X2/img1x2.png"]
    root = _layout(tmp_path, files)
    _expect_one_line_error(monkeypatch, capsys, ["set5", "--model", "bicubic", "--scale", "2",
                                                 "--data-dir", str(root)], "lacks img1x2.png")


def test_hr_lr_size_disagreement_is_refused_before_scoring(tmp_path, monkeypatch, capsys):
    files = _benchmark_files()
    files["benchmark/Set5/LR_bicubic/X2/img1x2.png"] = _png(np.zeros((10, 10, 3), np.uint8))
    root = _layout(tmp_path, files)
    save = tmp_path / "sr"
    _expect_one_line_error(monkeypatch, capsys, ["set5", "--model", "bicubic", "--scale", "2",
                                                 "--data-dir", str(root), "--save-dir", str(save)],
                           "Set5/img1", "LR is 10x10", "needs LR 22x18")
    assert not save.exists()


def test_model_of_another_scale_is_refused(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "edsr_x2.pt"
    torch.save(build("edsr", scale=2, blocks=1, features=8).state_dict(), checkpoint)
    root = _layout(tmp_path, _benchmark_files())
    _expect_one_line_error(monkeypatch, capsys, ["set5", "--weights", str(checkpoint), "--scale", "2,4",
                                                 "--data-dir", str(root)], "x4")


def test_div2k_rgb_protocol_scores_rgb_with_shave_scale_plus_6_and_saves_what_it_scored(tmp_path, monkeypatch, capsys):
    images = _images()
    root = _layout(tmp_path, _benchmark_files(images=images))
    save = tmp_path / "sr"
    code, out, _ = _cli(monkeypatch, capsys, "set5", "--model", "bicubic", "--scale", "2", "--protocol", "div2k-rgb",
                        "--data-dir", str(root), "--save-dir", str(save), "--json", "--per-image")
    assert code == 0
    rows = json.loads(out)["results"][0]["rows"]
    for row in rows:
        hr = images[row["name"]]
        expected = imresize(downscale(hr, 2), 2)
        saved = cv2.cvtColor(cv2.imread(str(save / "Set5" / "x2" / f"{row['name']}.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(saved, expected)
        assert row["psnr"] == pytest.approx(psnr(expected, hr, shave=8, y_channel=False), abs=1e-9)
        assert row["psnr"] != pytest.approx(psnr(expected, hr, shave=2, y_channel=True), abs=1e-3)
