"""Finding and reading documents: .md, .txt, .html and .pdf become (title, sections) of plain text.

Problems with one file (unsupported, empty, binary, unreadable, corrupt) are returned as a reason, never
raised, so one bad file cannot stop an ingest of thousands.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass
class Document:
    """A loaded document: `sections` are (heading path, text) in reading order."""

    source: str
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)
    content_hash: str = ""


@dataclass
class FileProblem:
    source: str
    reason: str
    is_error: bool  # True: could not be read/parsed (errors); False: skipped by rule (skipped)


def source_name(path: Path, root: Path) -> str:
    """The stored `source`: POSIX path relative to `root` when inside it, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


MAX_SOURCE_CHARS = 1024  # the HTTP API's limit too; Milvus stores up to 2048 bytes of UTF-8


def source_problem(source: str) -> str | None:
    """Why `source` cannot be stored (control characters, too long), or None: checked per file, so one bad
    name is skipped and reported instead of aborting the whole batch inside Milvus."""
    if any(unicodedata.category(c) == "Cc" for c in source):
        return "the source path contains control characters (newline, tab, escape ...); rename the file"
    if len(source) > MAX_SOURCE_CHARS:
        return f"the source path is {len(source)} characters long; the limit is {MAX_SOURCE_CHARS}"
    return None


def discover(paths: list[str], root: Path) -> tuple[list[tuple[Path, str]], list[FileProblem]]:
    """Expand files and folders (recursively, hidden entries ignored) into (path, source) pairs."""
    found: dict[str, Path] = {}
    problems: list[FileProblem] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        fp = Path(dirpath) / name
                        found.setdefault(source_name(fp, root), fp)
        elif p.exists() or p.is_symlink():
            found.setdefault(source_name(p, root), p)
        else:
            problems.append(FileProblem(raw, "no such file or folder", True))
    good = []
    for source, path in sorted(found.items()):
        why = source_problem(source)
        if why is None:
            good.append((path, source))
        else:
            problems.append(FileProblem(_shown(source), why, False))
    return good, problems


def _shown(source: str) -> str:
    """A printable, bounded form of a rejected source for reports (escapes visible, long names cut)."""
    text = source.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"


def load(path: Path, source: str) -> Document | FileProblem:
    """Read one file into a Document, or say why it cannot be used."""
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        return FileProblem(
            source, f"unsupported file type {ext or '(none)'}; supported: {', '.join(SUPPORTED)}", False
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileProblem(source, f"unreadable: {exc.strerror or exc}", True)
    if not data.strip():
        return FileProblem(source, "empty file", False)
    digest = hashlib.sha256(data).hexdigest()
    try:
        if ext == ".pdf":
            title, sections = _pdf(data, path)
        else:
            if b"\x00" in data[:8192]:
                return FileProblem(source, "binary content in a text file", False)
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                return FileProblem(source, "not UTF-8 text", False)
            if ext in (".html", ".htm"):
                title, sections = _html(text, path)
            elif ext == ".txt":
                title, sections = _txt(text, path)
            else:
                title, sections = _markdown(text, path.stem)
    except Exception as exc:  # noqa: BLE001 - any parser failure is this file's problem, reported by name
        return FileProblem(source, f"cannot parse {ext} file: {type(exc).__name__}: {exc}"[:300], True)
    sections = [(h, t.strip()) for h, t in sections if t.strip()]
    if not sections:
        return FileProblem(source, "no text content", False)
    return Document(source=source, title=title, sections=sections, content_hash=digest)


def _markdown(text: str, fallback_title: str) -> tuple[str, list[tuple[str, str]]]:
    """Split on headings; each section carries its heading path ("Manual > Safety > Lockout")."""
    title = ""
    stack: list[tuple[int, str]] = []
    sections: list[tuple[str, str]] = []
    buf: list[str] = []
    in_fence = False

    def flush() -> None:
        sections.append((" > ".join(h for _, h in stack), "\n".join(buf)))
        buf.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else HEADING_RE.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2).strip()
            title = title or (heading if level == 1 else "")
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        else:
            buf.append(line)
    flush()
    return title or fallback_title, [(h or title or fallback_title, t) for h, t in sections]


def _txt(text: str, path: Path) -> tuple[str, list[tuple[str, str]]]:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    title = first if 0 < len(first) <= 100 else path.stem
    return title, [(title, text)]


def _html(text: str, path: Path) -> tuple[str, list[tuple[str, str]]]:
    """HTML headings become Markdown headings so one splitter serves both."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "nav", "template", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    body = soup.get_text("\n")
    body = re.sub(r"\n\s*\n+", "\n\n", body)
    title, sections = _markdown(body, page_title or path.stem)
    return page_title or title, sections


def _pdf(data: bytes, path: Path) -> tuple[str, list[tuple[str, str]]]:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    meta_title = (reader.metadata.title if reader.metadata else None) or ""
    pages = [(page.extract_text() or "") for page in reader.pages]
    first = next((ln.strip() for p in pages for ln in p.splitlines() if ln.strip()), "")
    title = meta_title.strip() or (first if 0 < len(first) <= 100 else path.stem)
    return title, [(f"{title} > page {i + 1}", t) for i, t in enumerate(pages)]
