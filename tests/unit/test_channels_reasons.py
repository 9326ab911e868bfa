"""charon log lines (strongSwan 5.9 texts) to the reason an operator reads."""
from __future__ import annotations

from acp_openwrt.channels.reasons import NOT_ANSWERING, better, knock, reason_from_log


def test_certificate_causes_are_named() -> None:
    other_ca = reason_from_log('no issuer certificate found for "CN=b, O=Other"')
    assert other_ca is not None and other_ca.answered
    assert other_ca.text == "peer certificate not from our CA (no issuer known for CN=b, O=Other)"
    expired = reason_from_log("subject certificate invalid (valid from Jan 01 00:00:00 2020 "
                              "to Jan 02 00:00:00 2020)")
    assert expired is not None and expired.text.startswith("peer certificate expired")
    assert "2020" in expired.text
    ident = reason_from_log("constraint check failed: identity 'fd00::9' required")
    assert ident is not None and ident.text == "identity mismatch (required fd00::9)"


def test_the_peers_refusals_and_silence() -> None:
    auth = reason_from_log("received AUTHENTICATION_FAILED notify error")
    assert auth is not None and "refused our certificate" in auth.text
    proposal = reason_from_log("received NO_PROPOSAL_CHOSEN notify error")
    assert proposal is not None and proposal.text.startswith("no proposal chosen")
    silent = reason_from_log("giving up after 3 retransmits")
    assert silent is not None and silent.text == NOT_ANSWERING and not silent.answered
    assert reason_from_log("sending retransmit 1 of request message ID 0, seq 1") is None
    assert reason_from_log("establishing CHILD_SA 'acp' failed") is None


def test_the_most_specific_cause_wins_within_an_attempt() -> None:
    vague = reason_from_log("no trusted ECDSA public key found for 'fd00::2'")
    specific = reason_from_log('no issuer certificate found for "CN=b"')
    assert better(better(None, specific), vague) == specific
    assert better(vague, specific) == specific
    assert better(specific, None) == specific


def test_a_knock_names_both_ends() -> None:
    line = "no IKE config found for fe80::1...fe80::2, sending NO_PROPOSAL_CHOSEN"
    assert knock(line) == ("fe80::1", "fe80::2")
    assert knock("no IKE config found for fe80::1[500]...fe80::2[500], sending x") == \
        ("fe80::1", "fe80::2")
    assert knock("received NO_PROPOSAL_CHOSEN notify error") is None
