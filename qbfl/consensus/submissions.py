"""A round's collected client updates (DESIGN §5 steps 1–2): verified, one per client, kept until the block."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from qbfl.consensus.wire import InvalidMessage
from qbfl.errors import StaleRound
from qbfl.ledger.block import UpdateSubmission
from qbfl.ledger.genesis import GenesisBlock


class SubmissionPool(Mapping[int, UpdateSubmission]):
    """Client id → its verified submission for the round in progress.

    Submissions are per round, not per view: a view change keeps them (the new committee's
    members may already hold some) and only a committed block clears the pool.
    """

    def __init__(self, genesis: GenesisBlock) -> None:
        self._genesis = genesis
        self._held: dict[int, UpdateSubmission] = {}

    def __getitem__(self, client_id: int) -> UpdateSubmission:
        return self._held[client_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def admit(self, sub: UpdateSubmission, *, head_hash: bytes) -> bool:
        """Verify `sub` and keep it; False for an exact duplicate (nothing changes).

        The caller has checked the round and that the transport sender is the client. Raises
        StaleRound (trained on another block), InvalidMessage (not on the roster, or a second,
        different update), InvalidSignature or InvalidUpdate; the pool is unchanged then.
        """
        if sub.base_block_hash != head_hash:
            raise StaleRound(f"update from {sub.client_id} was trained on another block")
        key = self._genesis.public_keys.get(sub.client_id)
        if key is None:
            raise InvalidMessage(f"client {sub.client_id} is not in the roster")
        held = self._held.get(sub.client_id)
        if held is not None:
            if held != sub:
                raise InvalidMessage(f"client {sub.client_id} sent two different updates")
            return False
        sub.verify(key, expected_param_count=self._genesis.param_count)
        self._held[sub.client_id] = sub
        return True

    def holds_all(self, inputs: Sequence[int]) -> bool:
        return all(c in self._held for c in inputs)

    def rows(self, inputs: Sequence[int]) -> np.ndarray:
        """The named updates stacked as float32 rows, in the order given."""
        return np.stack([np.frombuffer(self._held[c].update, dtype="<f4") for c in inputs]).astype(
            np.float32
        )

    def clear(self) -> None:
        self._held = {}
