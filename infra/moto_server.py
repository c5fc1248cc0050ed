"""moto's server, with DynamoDB's atomic conditional writes.

DynamoDB applies a conditional write atomically. moto's server is threaded and checks a
condition and writes without a lock, so two concurrent conditional updates of one item
can both pass. Sluice's lease rests on that guarantee (two invocations of one source:
one runs, one is skipped), so the tests' moto keeps it: the DynamoDB backend's item
writes run under one lock. Reads and the other services stay concurrent.
"""
import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_writes = threading.RLock()


def _atomic(write):
    @functools.wraps(write)
    def locked(*args, **kwargs):
        with _writes:
            return write(*args, **kwargs)

    return locked


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _atomic(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.exit(main())
