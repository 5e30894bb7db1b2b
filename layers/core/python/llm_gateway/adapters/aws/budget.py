"""`BudgetLedger` on DynamoDB: conditional updates in one transaction per reservation.

One table, partition key `pk` (S):
- counter `c#<budget key>`: `used_nusd`/`used_tokens` (spent + reserved, the quantity the cap
  bounds), `spent_*` and `reserved_*`;
- alert marker `a#<budget key>#<share>`: put once, so an alert fires once per budget and share;
- reservation `r#<request id>`: the counter keys, the held amounts, `expires_at`, `state`
  (held | settled | reclaimed), and `held` = "1" while held — a sparse index `held`
  (partition `held`, sort `expires_at`) lists the open ones for reclaiming.

`reserve` is one `TransactWriteItems`: every counter is updated only if its `used_*` is at most
cap minus this request's amount (DynamoDB conditions compare an attribute with a value, so the
subtraction happens here), and the reservation is put only if new. Either all of it happens or
none, whatever runs concurrently. `settle` is another transaction, conditional on the reservation
still being held, so a retried finish cannot charge twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ...backoff import jittered_delay
from ...ports import BudgetLimit, BudgetRefused, BudgetUsage

HELD_INDEX = "held"
CONFLICT_RETRIES = 8
CONFLICT_FIRST_S, CONFLICT_MOST_S = 0.01, 1.28  # a lost conditional write waits up to 10 ms, doubled each time
_CONFLICT = "\0conflict"


def budget_key_schema() -> dict[str, Any]:
    """`create_table` arguments (tests and local tooling; CDK defines the same)."""
    return {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "held", "AttributeType": "S"},
            {"AttributeName": "expires_at", "AttributeType": "N"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": HELD_INDEX,
                "KeySchema": [
                    {"AttributeName": "held", "KeyType": "HASH"},
                    {"AttributeName": "expires_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


class DynamoBudgetLedger:
    def __init__(self, table: str, client: Any) -> None:
        self._table = table
        self._client = client

    def reserve(
        self, reservation_id: str, limits: Sequence[BudgetLimit], nusd: int, tokens: int, expires_at: float, now: float
    ) -> None:
        reclaimed = False
        for attempt in range(CONFLICT_RETRIES):
            refused = self._try_reserve(reservation_id, limits, nusd, tokens, expires_at)
            if refused is None:
                return
            if refused == _CONFLICT:
                time.sleep(jittered_delay(CONFLICT_FIRST_S, CONFLICT_MOST_S, attempt))
                continue
            if not reclaimed and self.reclaim_expired(now):
                reclaimed = True
                continue  # holds of dead requests were in the way: try once more
            raise BudgetRefused(refused)
        raise RuntimeError(f"budget reservation {reservation_id} kept conflicting with concurrent ones")

    def _try_reserve(
        self, reservation_id: str, limits: Sequence[BudgetLimit], nusd: int, tokens: int, expires_at: float
    ) -> str | None:
        """None when reserved (or already reserved); else the key of a counter that refused."""
        items: list[dict[str, Any]] = []
        for limit in limits:
            conditions, values = [], {":n": _n(nusd), ":t": _n(tokens), ":zero": _n(0)}
            for attribute, cap, amount, name in (
                ("used_nusd", limit.max_nusd, nusd, ":max_n"),
                ("used_tokens", limit.max_tokens, tokens, ":max_t"),
            ):
                if cap is None:
                    continue
                if amount > cap:
                    return limit.key
                conditions.append(f"(attribute_not_exists({attribute}) OR {attribute} <= {name})")
                values[name] = _n(cap - amount)
            update: dict[str, Any] = {
                "TableName": self._table,
                "Key": {"pk": {"S": f"c#{limit.key}"}},
                "UpdateExpression": (
                    "SET used_nusd = if_not_exists(used_nusd, :zero) + :n, "
                    "used_tokens = if_not_exists(used_tokens, :zero) + :t, "
                    "reserved_nusd = if_not_exists(reserved_nusd, :zero) + :n, "
                    "reserved_tokens = if_not_exists(reserved_tokens, :zero) + :t"
                ),
                "ExpressionAttributeValues": values,
            }
            if conditions:
                update["ConditionExpression"] = " AND ".join(conditions)
            items.append({"Update": update})
        items.append(
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        "pk": {"S": f"r#{reservation_id}"},
                        "keys": {"L": [{"S": limit.key} for limit in limits]},
                        "nusd": _n(nusd),
                        "tokens": _n(tokens),
                        "expires_at": _n(expires_at),
                        "state": {"S": "held"},
                        "held": {"S": "1"},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        )
        try:
            self._client.transact_write_items(TransactItems=items)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            codes = [r.get("Code", "None") for r in reasons]
            if len(codes) == len(items) and codes[-1] == "ConditionalCheckFailed":
                return None  # this request already holds its reservation (a retried step)
            failed = [limits[i].key for i, code in enumerate(codes[: len(limits)]) if code == "ConditionalCheckFailed"]
            if failed:
                return failed[0]
            return _CONFLICT  # a concurrent transaction on the same items: try again
        return None

    def settle(self, reservation_id: str, nusd: int, tokens: int) -> bool:
        return self._finish(reservation_id, nusd, tokens, "settled")

    def _finish(self, reservation_id: str, nusd: int, tokens: int, state: str) -> bool:
        for attempt in range(CONFLICT_RETRIES):
            done = self._try_finish(reservation_id, nusd, tokens, state)
            if done is not None:
                return done
            time.sleep(jittered_delay(CONFLICT_FIRST_S, CONFLICT_MOST_S, attempt))
        raise RuntimeError(f"budget reservation {reservation_id} kept conflicting with concurrent ones")

    def _try_finish(self, reservation_id: str, nusd: int, tokens: int, state: str) -> bool | None:
        """True when finished now, False when it was not held, None on a transaction conflict."""
        row = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": f"r#{reservation_id}"}}, ConsistentRead=True
        ).get("Item")
        if row is None or row["state"]["S"] != "held":
            return False
        held_nusd, held_tokens = int(row["nusd"]["N"]), int(row["tokens"]["N"])
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {"pk": {"S": f"r#{reservation_id}"}},
                    "UpdateExpression": "SET #s = :state REMOVE held",
                    "ConditionExpression": "#s = :held",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {":state": {"S": state}, ":held": {"S": "held"}},
                }
            }
        ]
        for key in row["keys"]["L"]:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": f"c#{key['S']}"}},
                        "UpdateExpression": (
                            "ADD used_nusd :dn, used_tokens :dt, spent_nusd :n, spent_tokens :t, "
                            "reserved_nusd :rn, reserved_tokens :rt"
                        ),
                        "ExpressionAttributeValues": {
                            ":dn": _n(nusd - held_nusd),
                            ":dt": _n(tokens - held_tokens),
                            ":n": _n(nusd),
                            ":t": _n(tokens),
                            ":rn": _n(-held_nusd),
                            ":rt": _n(-held_tokens),
                        },
                    }
                }
            )
        try:
            self._client.transact_write_items(TransactItems=items)
        except self._client.exceptions.TransactionCanceledException as exc:
            codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            return False if codes and codes[0] == "ConditionalCheckFailed" else None  # finished meanwhile, or conflict
        return True

    def reclaim_expired(self, now: float) -> int:
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": HELD_INDEX,
            "KeyConditionExpression": "held = :one AND expires_at <= :now",
            "ExpressionAttributeValues": {":one": {"S": "1"}, ":now": _n(now)},
        }
        reclaimed = 0
        while True:
            page = self._client.query(**query)
            for item in page.get("Items", []):
                reclaimed += self._finish(item["pk"]["S"].removeprefix("r#"), 0, 0, "reclaimed")
            if "LastEvaluatedKey" not in page:
                return reclaimed
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def usage(self, key: str) -> BudgetUsage:
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": f"c#{key}"}}, ConsistentRead=True).get(
            "Item", {}
        )

        def number(name: str) -> int:
            return int(item[name]["N"]) if name in item else 0

        return BudgetUsage(
            number("spent_nusd"), number("spent_tokens"), number("reserved_nusd"), number("reserved_tokens")
        )

    def claim_alert(self, key: str, share: str) -> bool:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={"pk": {"S": f"a#{key}#{share}"}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def reservation_states(self) -> dict[str, str]:
        """Reservation id -> state (tests and reports; a scan)."""
        states: dict[str, str] = {}
        scan: dict[str, Any] = {"TableName": self._table}
        while True:
            page = self._client.scan(**scan)
            for item in page.get("Items", []):
                if item["pk"]["S"].startswith("r#"):
                    states[item["pk"]["S"][2:]] = item["state"]["S"]
            if "LastEvaluatedKey" not in page:
                return states
            scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
