"""The digits example project: "written and spoken digits", a project like any user's.

`params.yaml` declares its task; `demo.py` generates its landing batches (and, with `golden`, its
golden batch); `labelling.py` holds its caption labelling function. The core never imports it.
"""
