"""The real shifted test sets' bad input: a dataset whose classes are not CIFAR-10's in CIFAR-10's
order, an empty .npy, a CIFAR-10.1 download cut short, and a CIFAR-10-C archive that is cut short
or holds a member outside its folder. Each is one line that says what to do, and leaves nothing
behind. Real files, real HTTP servers on localhost."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

from bench.errors import BenchError
from bench.shift_data import download_cifar101, download_cifar10c, load_cifar101, load_cifar10c
from tests.builders import make_imagefolder, write_cifar101

# CIFAR-10's classes under other folder names, which sort into another order (car before plane)
RENAMED = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _plan(root, tmp_path, attack, dry_run=False):
    from bench.cli import make_plan
    from bench.run import build_parser
    return make_plan(build_parser().parse_args(
        ["--profile", "smoke", "--data-root", str(root), "--model", "fastnetw8_T1", "--attack", attack,
         "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]))


@pytest.fixture
def renamed_tree(tmp_path, monkeypatch):
    """Ten classes named otherwise than CIFAR-10's, and CIFAR-10.1 files where they are looked for."""
    write_cifar101(tmp_path / "shift" / "CIFAR-10.1", n=20)
    monkeypatch.setenv("BENCH_SHIFT_DATA", str(tmp_path / "shift"))
    return make_imagefolder(tmp_path / "renamed", n_train=60, n_test=10, classes=RENAMED)


def test_cifar101_is_skipped_for_classes_in_another_order(renamed_tree, tmp_path):
    """10 classes were all that was checked: plane/car got CIFAR-10.1's airplane/automobile labels
    swapped and a cifar10.1 accuracy was published."""
    from bench.grid.jobs import Context
    lines = []
    ctx = Context(_plan(renamed_tree, tmp_path, "all"), lines.append)
    assert "cifar10.1" not in ctx.families
    skipped = [s for s in lines if s.startswith("shifts: CIFAR-10.1 skipped:")]
    assert len(skipped) == 1 and "sort as bird, car, cat" in skipped[0] and "airplane, automobile" in skipped[0]


def test_cifar101_named_for_classes_in_another_order_stops(renamed_tree, tmp_path, capsys):
    from bench.grid.jobs import Context
    with pytest.raises(BenchError, match="CIFAR-10.1 cannot be measured.*name the class folders as CIFAR-10's"):
        Context(_plan(renamed_tree, tmp_path, "cifar10.1"), print)
    from bench.run import main
    args = ["--profile", "smoke", "--data-root", str(renamed_tree), "--model", "fastnetw8_T1", "--attack",
            "cifar10.1", "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"), "--no-progress"]
    capsys.readouterr()
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: CIFAR-10.1 cannot be measured") and not (tmp_path / "results").exists()


def test_an_empty_npy_is_one_line(tmp_path):
    """np.load raises EOFError for a 0-byte file (a failed wget, a touch): it was a traceback."""
    write_cifar101(tmp_path / "CIFAR-10.1")
    (tmp_path / "CIFAR-10.1" / "cifar10.1_v6_labels.npy").write_bytes(b"")
    with pytest.raises(BenchError, match="cifar10.1_v6_labels.npy is not a readable .npy array.*download it again"):
        load_cifar101(tmp_path / "CIFAR-10.1")
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    (folder / "fog.npy").touch()
    with pytest.raises(BenchError, match="fog.npy is not a readable .npy array"):
        load_cifar10c(folder, "fog", np.zeros(10))


@pytest.fixture
def cut_server(tmp_path):
    """A real HTTP server on localhost that announces each file's whole length and sends half of
    the files whose names contain 'data', then closes the connection (urllib reports nothing)."""
    www = tmp_path / "cut"
    www.mkdir()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = www / self.path.rsplit("/", 1)[-1]
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if "data" in path.name else body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_cut_off_cifar101_download_says_rerun(tmp_path, cut_server):
    """The message told the user to delete a temp file that the download had already removed."""
    www, url = cut_server
    write_cifar101(www)
    (tmp_path / "cache").mkdir()
    with pytest.raises(BenchError) as e:
        download_cifar101(tmp_path / "cache" / "downloads", base_url=url)
    msg = str(e.value)
    assert "incomplete" in msg and "rerun" in msg and "nothing was kept" in msg and "\n" not in msg
    assert ".tmp-" not in msg and "delete it" not in msg
    assert list((tmp_path / "cache").iterdir()) == []


def _tar(path, members):
    """A tar of (name, bytes) members, written as given (tarfile.add would normalise a '../')."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_cifar10c_member_outside_its_folder_is_refused(tmp_path, http_server):
    www, base = http_server
    md5 = _tar(www / "CIFAR-10-C.tar", [("CIFAR-10-C/labels.npy", b"x"), ("CIFAR-10-C/../../escaped.txt", b"x")])
    dest = tmp_path / "dl" / "downloads"
    with pytest.raises(BenchError, match="could not unpack CIFAR-10-C.*outside the destination"):
        download_cifar10c(dest, url=base + "/CIFAR-10-C.tar", md5=md5)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "dl").exists()  # nor the archive, nor a half-unpacked folder


def test_without_tar_filters_the_members_are_checked_here(tmp_path, http_server, monkeypatch):
    """Python before 3.10.12 / 3.11.4 (which pyproject allows) has no extraction filters: filter=
    raised TypeError, a traceback after the 2.9 GB download."""
    import tarfile
    monkeypatch.delattr(tarfile, "data_filter")
    www, base = http_server
    md5 = _tar(www / "CIFAR-10-C.tar", [("CIFAR-10-C/labels.npy", b"x"), ("CIFAR-10-C/../../escaped.txt", b"x")])
    with pytest.raises(BenchError, match="could not unpack CIFAR-10-C.*outside the destination"):
        download_cifar10c(tmp_path / "dl", url=base + "/CIFAR-10-C.tar", md5=md5)
    assert not list(tmp_path.rglob("escaped.txt"))
    md5 = _tar(www / "CIFAR-10-C.tar", [("CIFAR-10-C/labels.npy", b"y")])
    folder = download_cifar10c(tmp_path / "dl", url=base + "/CIFAR-10-C.tar", md5=md5)
    assert (folder / "labels.npy").read_bytes() == b"y"


def test_a_cut_off_cifar10c_download_leaves_nothing(tmp_path, cut_server):
    www, url = cut_server
    md5 = _tar(www / "CIFAR-10-C-data.tar", [("CIFAR-10-C/labels.npy", b"x" * 4096)])
    (tmp_path / "cache").mkdir()
    with pytest.raises(BenchError, match="could not download CIFAR-10-C"):
        download_cifar10c(tmp_path / "cache" / "downloads", url=url + "CIFAR-10-C-data.tar", md5=md5)
    assert list((tmp_path / "cache").iterdir()) == []  # torchvision's helper left the cut archive in place
    www.joinpath("CIFAR-10-C-data.tar").rename(www / "CIFAR-10-C.tar")  # served whole: it unpacks
    assert (download_cifar10c(tmp_path / "cache" / "downloads", url=url + "CIFAR-10-C.tar", md5=md5) / "labels.npy"
            ).read_bytes() == b"x" * 4096
    assert sorted(p.name for p in (tmp_path / "cache" / "downloads").iterdir()) == ["CIFAR-10-C", "CIFAR-10-C.tar"]
