"""Trackable attachments: what the web app and the documents worker share.

Owns where document bytes live (`storage`: the original upload, the PDF made
from an Office file, every page image), deciding a file's type from its
content (`sniff`), the signed tokens in viewer URLs (`tokens`), and the words
for the active content found in a PDF and what became of it (`findings`).

Must never: trust a file's name or declared content type, open a file with a
library that could run its code (parsing and rendering happen in the worker's
sandboxed subprocesses, see `worker.documents`), or put a database id in a URL
unsigned.
"""
