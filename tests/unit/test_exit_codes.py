"""The operator's failure policy reads the bundled trainer's exit codes: both sides use the same
numbers, and the contract page lists each of them."""

import signal
from pathlib import Path

from torchyard.reconcile import failures
from torchyard_trainer import errors

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def test_the_operator_and_the_trainer_agree_on_the_exit_codes():
    assert failures.EXIT_STOPPED == errors.EXIT_PREEMPTED == 128 + signal.SIGTERM
    assert failures.EXIT_PEER_LOST == errors.EXIT_PEER_LOST


def test_the_contract_lists_every_exit_code_of_the_trainer():
    text = CONTRACT.read_text()
    codes = [errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_USER_ERROR, errors.EXIT_PREEMPTED, errors.EXIT_PEER_LOST]
    assert [code for code in codes if f"\n| {code} |" not in text] == []
