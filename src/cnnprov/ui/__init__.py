"""A dashboard in the browser: runs, curves that grow while a run trains, comparisons, SPARQL.

``cnnprov ui --store DIR|URL`` serves it on 127.0.0.1 (``pip install 'cnnprov[ui]'``); from
Python, :class:`~cnnprov.ui.server.Dashboard`. It reads the store the way every command does and
writes nothing.
"""
