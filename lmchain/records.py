"""The records that cross stages, as typed dicts: what a line of the JSONL files holds.

- :class:`Document`: a text with its provenance. Collect writes them (``records.jsonl``), curate
  reads and rewrites them (text cleaned, language and PII counts added), the gate checks them and
  passes the curated file on, annotate reads them as its corpus.
- :class:`Rejected`: a document a stage dropped, with the reason (``rejects.jsonl``): kept where
  a user can inspect it, never silently lost.
- :class:`Example`: a labelled text of annotate's splits (``train/validation/test.jsonl``), which
  fine-tune, evaluate and deploy read.
- :class:`Entity` and :class:`NerExample`: a recipe with ``task: ner`` labels character spans of
  a text instead of the whole text. Collect reads them onto the :class:`Document` (``entities``,
  or ``annotations`` when several people labelled it), curate keeps them aligned when it changes
  the text, annotate writes :class:`NerExample` splits. Offsets index ``text`` as Python strings
  do (code points, end exclusive); :mod:`lmchain.text_spans` converts them to and from BIO tags.

Why TypedDicts and not dataclasses: a record is a dict at every step of its life (a JSONL line,
a chunk pickled to curate's worker processes, a row of the gate's pandas frame) and curate's
steps change it in place, so a typed dict costs nothing per record and changes nothing on disk,
while the type checker still catches a misspelt key. ``Document(...)`` builds a plain dict; a
file's or a page's extra fields ride along (``meta``, and the crawl's fields below), as before.
"""

from typing import Any, Required, TypedDict


class Entity(TypedDict):
    """A labelled span of a text: ``text[start:end]`` is the entity, ``label`` its type (PER, ORG...)."""

    start: int
    end: int
    label: str


class Annotation(TypedDict):
    """One annotator's spans of a text (Label Studio: one per ``annotations[]`` entry)."""

    annotator: str
    entities: list[Entity]


class Document(TypedDict, total=False):
    """One document. Every kept record has ``id``, ``text``, ``source``, ``url``, ``fetched_at``
    and ``sha256``; the rest depends on where it came from and which stages it went through. (No
    key is required: a rejected fetch or an unreadable row has no text, see :class:`Rejected`.)"""

    id: str  # "<first 16 hex of sha256>-<ordinal>", set by collect
    text: str
    source: str  # "file" or "web"
    url: str  # file URI with "#L<line>", or the page's (canonical) URL
    fetched_at: str  # ISO time: a page's fetch, a file's modification (so reruns write the same bytes)
    sha256: str  # of the text (curate sets it again for the cleaned text)
    meta: dict[str, Any]  # a file's other columns, a page's title
    # crawled pages
    fetched_url: str
    title: str
    language: str  # a page's hint, then curate's detected language
    content_type: str
    charset: str
    etag: str | None
    last_modified: str | None
    html_sha256: str
    text_sha256: str
    extractor: str
    html: str  # with collect.crawl.keep_html
    status: int
    depth: int
    referrer: str | None
    attempts: int
    redirected_to: str
    # added by curate
    language_score: float
    boilerplate_lines: int
    pii: dict[str, int]  # redactions per kind
    _original: str  # curate, in flight only: the text as collected, for a duplicate's reject (never written)
    # task: ner (absent from a classification corpus)
    entities: list[Entity]  # one annotator's spans ([]: labelled, no entity; absent: unlabelled)
    annotations: list[Annotation]  # several annotators' spans, each kept (Label Studio exports)
    bio_repaired: int  # CoNLL: I- tags read as B- (conlleval), counted so a sloppy file shows
    _original_spans: dict[str, Any]  # curate, in flight only: entities/annotations as collected
    detail: str  # curate's reject of a ner record: which entity could not follow the text's change, and why


class Rejected(Document, total=False):
    """A dropped document, as it was when dropped, with why (and, for a duplicate, of what)."""

    reason: Required[str]  # "<kind>" or "<kind>: detail"; manifests count the kinds
    duplicate_of: str  # id of the kept document, or "earlier run"


class Example(TypedDict, total=False):
    """A labelled text of annotate's splits."""

    id: Required[str]
    text: Required[str]
    label: Required[int]  # index into labels.json's names
    label_name: str
    source: str
    provenance: str  # human | feedback (people); rule | model | rule+model | prior (weak labels)
    confidence: float
    votes: dict[str, str]  # weak labels' decisions (weak.jsonl): labelling function -> label name
    kept: bool  # weak.jsonl: confident enough to train on


class NerExample(TypedDict, total=False):
    """A text with its entity spans, in annotate's splits for ``task: ner``."""

    id: Required[str]
    text: Required[str]
    entities: Required[list[Entity]]
    source: str
    provenance: str  # human (the only one so far: weak span labels come later)
    confidence: float  # share of the text's annotators who agree with the kept spans (1.0: one annotator)
    annotators: list[str]
