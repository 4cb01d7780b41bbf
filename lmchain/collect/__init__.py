"""Collecting text: the crawler (robots.txt, politeness, sitemaps, incremental state), file and
saved-dataset sources, HTML to text. The ``collect`` stage that uses them is
:mod:`lmchain.stages.collect`."""
