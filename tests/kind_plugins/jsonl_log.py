"""Destination type ``jsonl_log``: appends one JSON line per change to a file.

type: jsonl_log
file: /var/log/cdp/changes.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from lakecdp.activation.config import DestinationBase

if TYPE_CHECKING:
    from lakecdp.activation.job import Delivery


class JsonlLogDestination(DestinationBase):
    type: Literal["jsonl_log"]
    file: str

    def deliver(self, delivery: Delivery, rows: Sequence[dict[str, Any]]) -> None:
        with open(self.file, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(
                    json.dumps(
                        {
                            "destination": delivery.name,
                            "segment_id": row["segment_id"],
                            "customer_id": row["customer_id"],
                            "change_type": row["change_type"],
                            "email": row["email"],
                        }
                    )
                    + "\n"
                )
        # the ledger: these changes are never sent again
        delivery.record(rows, status="delivered")
