"""Collecting text: the crawler (robots.txt, politeness, sitemaps, incremental state) and HTML to
text. File and dataset sources, which other stages read too, are :mod:`lmchain.sources`. The
``collect`` stage that uses them is :mod:`lmchain.stages.collect`."""
