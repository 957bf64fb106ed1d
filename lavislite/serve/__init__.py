"""Serving BLIP: a persistent image-search index, search over it, and an HTTP service with a web page.

* :mod:`lavislite.serve.index` — the on-disk index (normalised ITC embeddings in faiss, the image paths,
  the identity of the model that made them), written so a kill never leaves it corrupt;
* :mod:`lavislite.serve.build` — incremental (re-)indexing of folders, webdataset shards and annotation
  files, split across ranks under ``torchrun``;
* :mod:`lavislite.serve.search` — text->image (ITC top-k, then ITM re-ranking), image->image,
  image->text, and zero-shot classification;
* :mod:`lavislite.serve.app` — the FastAPI application (``lavislite serve``), with dynamic batching
  (:mod:`lavislite.serve.batching`) and guarded inputs (:mod:`lavislite.serve.images`).

Nothing here is imported by ``import lavislite``; faiss, FastAPI and uvicorn load only when used.
"""
