"""``dasktrain images PATH``: counts per class, unreadable files, sizes and modes."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def _print_unreadable(bad, decoded):
    if bad:
        print(f"unreadable: {len(bad)} file(s)")
        for p, reason in bad:
            print(f"  {p}: {reason}")
    else:
        hint = "" if decoded else " (headers checked; --decode to decode)"
        print("unreadable: none" + hint)


def _which_folders(path):
    """What is counted, when ``dasktrain compare`` would read less: ``PATH/train`` only."""
    from pathlib import Path

    from ..harness import image_root

    try:
        root = image_root(path)
    except Exception:  # noqa: BLE001 - scan_images said what is wrong with the folder
        return None
    if root == Path(path):
        return None
    others = sorted(p.name + "/" for p in Path(path).iterdir() if p.is_dir() and p != root)
    return (
        f"  (every sub-folder counted: {', '.join(['train/', *others])} together; "
        f"dasktrain compare {path} reads {root} only)"
    )


def run(args) -> int:
    """Handler of ``dasktrain images``; returns 1 when unreadable files were found."""
    from ..images import scan_images

    classes = args.classes.split(",") if args.classes else None
    s = scan_images(args.path, classes=classes, decode=args.decode)
    total = sum(s["counts"].values())
    print(f"{args.path}: {total} readable image(s) in {len(s['classes'])} classes")
    note = _which_folders(args.path)
    if note:
        print(note)
    width = max(len(c) for c in s["classes"])
    for c, k in s["counts"].items():
        print(f"  {c:<{width}} {k:>7}")
    print("formats: " + ", ".join(f"{k} x{v}" for k, v in s["formats"].most_common()))
    print("modes:   " + ", ".join(f"{k} x{v}" for k, v in s["modes"].most_common()))
    sizes = s["sizes"].most_common()
    shown = ", ".join(f"{w}x{h} x{v}" for (w, h), v in sizes[:10])
    print(f"sizes:   {shown}" + (f" (+{len(sizes) - 10} more)" if len(sizes) > 10 else ""))
    bad = list(s["unreadable"])
    _print_unreadable(bad, args.decode)
    return 1 if bad else 0


def add_parser(subparsers) -> None:
    """Add ``dasktrain images`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "images", help="summarise an image folder: counts per class, unreadable files, sizes, modes"
    )
    p.add_argument(
        "path",
        help="folder with one sub-folder per class (at any depth: PATH/train and PATH/test are "
        "counted together, where dasktrain compare PATH reads PATH/train only)",
    )
    p.add_argument("--classes", help="comma-separated class names to count, in order")
    p.add_argument(
        "--decode", action="store_true", help="decode every file too (slower, finds truncation)"
    )
    p.set_defaults(func=run)
