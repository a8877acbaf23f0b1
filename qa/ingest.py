"""Files -> Articles: decoding, metadata (title, date, source, author) and boilerplate removal."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .settings import UserError
from .types import Article, Span

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md"}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_SUFFIXES = {".jsonl"}
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES

# Whitespace as it appears in scraped news: NBSP, em space, ideographic space, BOM.
WS = " \t\r\n\u00a0\u2002\u2003\u2009\u3000\ufeff"

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
DATE_PATTERNS = [
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"),
    re.compile(r"\b\d{4}/\d{1,2}/\d{1,2}(?: \d{1,2}:\d{2})?"),
    re.compile(rf"\b{_MONTH}\s+\d{{1,2}}\s*,\s*\d{{4}}(?:\s+\d{{1,2}}:\d{{2}})?"),
    re.compile(rf"\b\d{{1,2}}\s+{_MONTH},?\s+\d{{4}}"),
]
CREDIT = re.compile(
    r"^(author|authors|writer|reporter|revisor|reviser|editor|editors|edited by|translator|"
    r"photo|photos|photographer|source)\s*[|:：]\s*(?P<value>.+)$", re.I)
BYLINE = re.compile(r"^By\s+(?P<author>[^()|:]{2,60}?)\s*(?:\((?P<source>[^)]{2,60})\))?"
                    r"(?=\s*(?:Updated|$|\d|\|))")
SOURCE_INLINE = re.compile(r"\bSource\s*[:：|]\s*(?P<value>[^|]+?)\s*$", re.I)
CRUMB = re.compile(r"^[^.!?]{1,40}(?:\s*>\s*[^.!?]{1,40})+$|^[A-Z][\w ]{0,20} / [A-Z][\w ]{0,20}$")
EMAIL_ONLY = re.compile(r"^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$")
PRINT_EDITION = re.compile(r"^\([^()]*\d{1,2}/\d{1,2}/\d{2,4}\s*page\s*\d+\)$", re.I)
CAPTION = re.compile(r"\((?:photo|photos|image|file photo)\b[^)]*\)\s*$|^(?:photo|photo by|image)\b", re.I)
TRAILERS = {"highlights", "hot topics", "related stories", "related", "most viewed",
            "most popular", "top news", "read more", "recommended", "editor's picks"}
HEADER_LINES = 6  # metadata is looked for in the first lines of an article only


@dataclass
class IngestReport:
    """What ingestion kept, skipped (with reasons) and found twice."""

    articles: list[Article] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    kept: int = 0  # articles kept (`articles` is empty where they stay on a cluster)
    quiet: bool = False  # skips are recorded, not logged (a file read elsewhere: read_file)

    def skip(self, where: str, why: str) -> None:
        if not self.quiet:
            log.warning("skipped %s: %s", where, why)
        self.skipped.append((where, why))


# Reads files, given as (source folder, file), into one (articles, skipped) per file, in order.
FileReader = Callable[[list[tuple[Path, Path]]], Iterable[tuple[list[Article], list[tuple[str, str]]]]]


def read_file(root: Path, path: Path) -> tuple[list[Article], list[tuple[str, str]]]:
    """One file's articles, nothing logged. It depends on the file alone, so files can be read
    anywhere, in any order (qa.cluster reads them on Ray); ingest decides what is kept.

    Args:
        root: the source folder the file was found in (doc_ids are paths below it).
        path: the file.

    Returns:
        (its articles, in file order; (where, why) for each part of it skipped)
    """
    report = IngestReport(quiet=True)
    return list(_read_safely(root, path, report)), report.skipped


def read_here(files: list[tuple[Path, Path]]) -> Iterator[tuple[list[Article], list[tuple[str, str]]]]:
    """read_file of each file in turn, in this process."""
    return (read_file(root, path) for root, path in files)


def ingest(sources: Iterable[Path | str], read: FileReader = read_here) -> IngestReport:
    """Read every supported file below the sources into Articles.

    Args:
        sources: folders (searched recursively) or single files.
        read: reads the files (read_here, or in other processes); what is kept and what is a
            duplicate is decided here, in path order (Choices), so any reader gives the same
            report.

    Returns:
        An IngestReport; articles are in path order, each content and doc_id once.

    Raises:
        UserError: a source is missing, or no readable article was found.
    """
    files = list(source_files(sources))
    choices = Choices(len(files))
    for (root, path), (articles, skipped) in zip(files, read(files), strict=True):
        ids = choices.file(root, path, [Found.of(a, path) for a in articles], skipped)
        choices.report.articles += [a if d == a.doc_id else replace(a, doc_id=d)
                                    for a, d in zip(articles, ids) if d is not None]
    return choices.done(sources)


@dataclass(frozen=True)
class Found:
    """What ingest decides on of one article read: its doc_id, where it was read (the file, or
    file:line of a corpus.jsonl) and a hash of its body, so that the decision needs no text."""

    doc_id: str
    where: str
    key: str

    @classmethod
    def of(cls, article: Article, path: Path) -> Found:
        return cls(article.doc_id, article.path or str(path), _content_key(article))


class Choices:
    """ingest's decisions, file by file in path order: which articles are kept, under which
    doc_id, and the report of what was skipped or found twice (articles are not added here)."""

    def __init__(self, files: int):
        self.report = IngestReport(files=files)
        self.seen_ids: dict[str, str] = {}
        self.seen_content: dict[str, str] = {}

    def file(self, root: Path, path: Path, found: list[Found],
             skipped: list[tuple[str, str]]) -> list[str | None]:
        """One file's articles, as read: the doc_id each is kept under, or None."""
        report, seen_ids, seen_content = self.report, self.seen_ids, self.seen_content
        for where, why in skipped:
            report.skip(where, why)
        out: list[str | None] = []
        for f in found:
            doc_id = f.doc_id
            if doc_id in seen_ids and path.suffix.lower() not in JSONL_SUFFIXES:
                # "a.txt" beside "a.md": keep both, the later one under its name with extension
                renamed = path.relative_to(root).as_posix()
                log.warning("%s and %s both give doc_id %r; indexed %s as %r", seen_ids[doc_id],
                            f.where, doc_id, f.where, renamed)
                doc_id = renamed
            if doc_id in seen_ids:
                report.skip(f.where, f"doc_id {doc_id!r} is already used by "
                                     f"{seen_ids[doc_id]}; rename one of them")
                out.append(None)
                continue
            if f.key in seen_content:
                first = seen_content[f.key]
                log.warning("duplicate: %s has the same text as %s; indexed once, as %s",
                            f.where, seen_ids[first], first)
                report.duplicates.append((doc_id, first))
                out.append(None)
                continue
            seen_ids[doc_id] = f.where
            seen_content[f.key] = doc_id
            report.kept += 1
            out.append(doc_id)
        return out

    def done(self, sources: Iterable[Path | str]) -> IngestReport:
        """The report, once every file is decided.

        Raises:
            UserError: no article was kept.
        """
        report = self.report
        if not report.kept:
            names = ", ".join(str(s) for s in sources)
            raise UserError(f"no readable articles in {names} ({report.files} files looked at, "
                            f"{len(report.skipped)} skipped); add .txt, .md, .html or "
                            f"corpus.jsonl files and run `qa build` again")
        return report


def source_files(sources: Iterable[Path | str]) -> Iterator[tuple[Path, Path]]:
    """(source folder, file) for every supported file below the sources, in path order.

    Hidden files and folders are left out. Raises UserError for no source or a missing one.
    """
    for source in check_sources(sources):
        if source.is_file():
            yield source.parent, source
            continue
        files = sorted(p for p in source.rglob("*")
                       if p.is_file() and p.suffix.lower() in SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(source).parts))
        yield from ((source, p) for p in files)


def check_sources(sources: Iterable[Path | str]) -> list[Path]:
    """The sources as paths.

    Raises:
        UserError: no source is given, or one does not exist.
    """
    paths = [Path(s) for s in sources]
    if not paths:
        raise UserError("no source folder given; pass a folder of articles, e.g. `qa build seeds/`")
    for source in paths:
        if not source.exists():
            raise UserError(f"source {source} does not exist; pass a folder of articles")
    return paths


def _read_safely(root: Path, path: Path, report: IngestReport) -> Iterator[Article]:
    """_read, but a file that breaks a parser is skipped with a warning, never the whole build."""
    try:
        yield from _read(root, path, report)
    except (ImportError, NameError):
        raise  # a missing dependency or a bug of ours is no fault of the file: say what it is
    except (Exception, RecursionError) as e:  # hostile input: deep nesting, parser bugs
        report.skip(str(path), f"cannot be parsed ({type(e).__name__}: {str(e)[:100]})")


def _read(root: Path, path: Path, report: IngestReport) -> Iterator[Article]:
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as e:
        report.skip(str(path), f"cannot be read ({e.strerror})")
        return
    text = decode(data, str(path), report)
    if text is None:
        return
    if suffix in JSONL_SUFFIXES:
        yield from _read_jsonl(text, str(path), report)
        return
    doc_id = path.relative_to(root).with_suffix("").as_posix()
    article = parse_html(doc_id, text) if suffix in HTML_SUFFIXES else parse_text(doc_id, text)
    if not article.body:
        report.skip(str(path), "no article text found (only headlines or boilerplate)")
        return
    yield Article(**{**article.__dict__, "path": str(path)})


def decode(data: bytes, where: str, report: IngestReport) -> str | None:
    """Bytes -> text: UTF-8 first, then the most likely other encoding; None if it is not text."""
    if not data.strip():
        report.skip(where, "empty file")
        return None
    if b"\x00" in data[:8192]:
        report.skip(where, "binary file (contains NUL bytes), not an article")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    western = _western(data)
    if western is not None:
        log.warning("%s is not UTF-8; read it as cp1252 (Windows Western)", where)
        return western
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.chaos > 0.3:
        report.skip(where, "not UTF-8 and no other text encoding fits; save it as UTF-8")
        return None
    log.warning("%s is not UTF-8; read it as %s", where, best.encoding)
    return str(best)


def _western(data: bytes) -> str | None:
    """cp1252 text that is mostly ASCII, else None.

    The usual legacy encoding of English news; charset_normalizer cannot tell it from cp1250
    on such text and would turn "Señor" into "Seńor".
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90 and 0x9D are not cp1252
        return None
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\r\n\f" for ch in text):
        return None
    return text if sum(ord(ch) > 127 for ch in text) <= 0.1 * len(text) else None


def _read_jsonl(text: str, where: str, report: IngestReport) -> Iterator[Article]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id, body = str(row["_id"]), row["text"]
            if not isinstance(body, str):
                raise TypeError("text is not a string")
            if not doc_id.strip() or row["_id"] is None:
                raise ValueError("_id is empty")
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            report.skip(f"{where}:{number}", f"not a corpus line with _id and text ({e})")
            continue
        spans = tuple(_lines(body))  # one paragraph a line
        if not spans:
            report.skip(f"{where}:{number}", "empty text")
            continue
        yield Article(doc_id=doc_id, text=body, title=str(row.get("title") or "").strip(),
                      path=f"{where}:{number}", body=spans)


def parse_text(doc_id: str, text: str) -> Article:
    """A plain-text or Markdown article -> Article with metadata and body spans.

    Metadata is read from the first lines only and never guessed: a field the article does not
    state stays empty. Example header lines and what they give:
        "Updated: May 18,2021"                              -> date 2021-05-18
        "By Hao Nan (China Daily) Updated: 2018-10-23 07:55" -> author, source, date
        "Author | Michelle" (anywhere)                     -> author
    """
    meta = {"title": "", "date": "", "source": "", "author": ""}
    body: list[Span] = []
    lines = list(_lines(text))
    for n, (start, end) in enumerate(lines):
        line = text[start:end]
        header = n < HEADER_LINES and not body
        if line.lower().rstrip(":") in TRAILERS:
            break
        if _metadata_line(line, meta, header):
            continue
        if header and not meta["title"] and not CRUMB.match(line):
            meta["title"] = line.lstrip("# ").strip()
            continue
        if header and CRUMB.match(line):
            continue
        if _boilerplate(line, meta["title"]):
            continue
        body.append((start, end))
    return Article(doc_id=doc_id, text=text, body=tuple(body), **meta)


def parse_html(doc_id: str, html: str) -> Article:
    """An HTML page -> Article; trafilatura finds the main text and metadata.

    The article text is trafilatura's extracted text, so offsets index into that.
    """
    import trafilatura

    doc = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False,
                                      date_extraction_params={"extensive_search": False,
                                                              "original_date": True})
    if doc is None:
        return Article(doc_id=doc_id, text="")
    found = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
    text = found.get("text") or ""
    parsed = parse_text(doc_id, text)
    title = (found.get("title") or "").strip()
    body = tuple(s for s in parsed.body if _norm(text[s[0]:s[1]]) != _norm(title)) if title else parsed.body
    return Article(doc_id=doc_id, text=text, body=body,
                   title=title or parsed.title,
                   date=_iso_date(found.get("date") or "") or parsed.date,
                   source=(found.get("sitename") or "").strip() or parsed.source,
                   author=(found.get("author") or "").strip() or parsed.author)


def _metadata_line(line: str, meta: dict, header: bool) -> bool:
    """Fill meta from a byline, credit or date line; True if the line is metadata, not body."""
    credit = CREDIT.match(line)
    if credit:
        field_name, value = credit.group(1).lower(), credit.group("value").strip()
        if field_name in {"author", "authors", "writer", "reporter"} and not meta["author"]:
            meta["author"] = value
        elif field_name == "source" and not meta["source"]:
            meta["source"] = value
        return True
    if not header:
        return False
    byline = BYLINE.match(line)
    if byline:
        meta["author"] = meta["author"] or byline.group("author").strip()
        meta["source"] = meta["source"] or (byline.group("source") or "").strip()
    date = _find_date(line) if len(line) < 120 else ""
    if date:
        meta["date"] = meta["date"] or date
        source = SOURCE_INLINE.search(line)
        if source:
            meta["source"] = meta["source"] or source.group("value").strip(WS)
    return bool(byline or date)


def _find_date(line: str) -> str:
    for pattern in DATE_PATTERNS:
        m = pattern.search(line)
        if m:
            return _iso_date(m.group(0))
    return ""


def _iso_date(value: str) -> str:
    """'May 18,2021' -> '2021-05-18'; '2022-01-17 09:14' -> '2022-01-17T09:14'; else ''."""
    if not value:
        return ""
    import dateparser

    parsed = dateparser.parse(value, languages=["en"],
                              settings={"PREFER_DAY_OF_MONTH": "first", "STRICT_PARSING": True})
    if parsed is None:
        return ""
    has_time = re.search(r"\d{1,2}:\d{2}", value) is not None
    return parsed.strftime("%Y-%m-%dT%H:%M" if has_time else "%Y-%m-%d")


def _boilerplate(line: str, title: str) -> bool:
    if title and _norm(line) == _norm(title):
        return True  # a headline repeated in the body
    if EMAIL_ONLY.match(line) or PRINT_EDITION.match(line) or CAPTION.search(line):
        return True
    # A short line without sentence punctuation is a caption or a label, not prose.
    return len(line.split()) < 4 and not re.search(r"[.!?\"”:]$", line)


def _lines(text: str) -> Iterator[Span]:
    """Spans of the non-empty lines, with surrounding whitespace (NBSP too) left out."""
    for m in re.finditer(r"[^\r\n]+", text):
        start, end = m.start(), m.end()
        while start < end and text[start] in WS:
            start += 1
        while end > start and text[end - 1] in WS:
            end -= 1
        if end > start:
            yield start, end


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def _content_key(article: Article) -> str:
    body = " ".join(_norm(article.text[a:b]) for a, b in article.body)
    return hashlib.sha256(body.encode()).hexdigest()
