"""Atomic outputs for the paper scripts: write to a temp file in the destination's directory, then rename, so
make never sees a half-written figure or table (an interrupted run leaves the old file or none)."""
import os, tempfile


def write_atomic(out, write, suffix):
    """Calls write(tmp_path), then renames tmp_path over `out`; the temp file is removed on any failure."""
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)   # mkstemp makes 0600
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def save_figure(fig, out, dpi=110):
    write_atomic(out, lambda p: fig.savefig(p, dpi=dpi, format="png"), ".png")


def save_text(text, out):
    def write(p):
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomic(out, write, os.path.splitext(out)[1] or ".txt")
