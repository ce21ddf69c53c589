"""Imported at the start of every Python process the tests launch (tests/emulator_site is on
their PYTHONPATH): the fake-gcs-server gap patched there too (see `number_batch_parts`)."""
import os


def number_batch_parts():
    """fake-gcs-server ignores the parts of a batch request that carry no Content-ID header,
    which Google's client never sends (real GCS does not need it): batched deletes, such as
    cloud-files' `delete`, then fail with "Bad response: not multi-part". Number the parts
    (a gap of the emulator, patched for the tests only)."""
    import itertools

    from google.cloud.storage import batch
    if getattr(batch, "_parts_numbered", False):
        return
    counter = itertools.count(1)

    class NumberedPart(batch.MIMEApplicationHTTP):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self["Content-ID"] = f"<part-{next(counter)}>"

    batch.MIMEApplicationHTTP = NumberedPart
    batch._parts_numbered = True


if os.environ.get("STORAGE_EMULATOR_HOST"):
    try:
        number_batch_parts()
    except ImportError:  # a process without Google's storage client
        pass
