"""Reading records from files: local files, folders and globs (:mod:`~lmchain.sources.files`:
txt, md, html, jsonl, csv, tsv, parquet) and Hugging Face datasets (:mod:`~lmchain.sources.hf`:
saved with ``save_to_disk``, or from the hub), and labelled text for ``task: ner``
(:mod:`~lmchain.sources.spans`: CoNLL, JSONL with character spans, Label Studio NER exports).

Collect reads its sources through them, and so do the stages that take files a user names:
curate's decontamination sets, annotate's label files, fine-tune's report set. One reader means
one behaviour for a bad row (a reject with its reason) and one error for a missing file.
"""
