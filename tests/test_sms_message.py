"""SMS rules without Spark: length and encoding, quiet hours per time zone, each change's fate,
and the destination config's hardening (secrets, addresses, zones, template path)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lakecdp.activation.config import DestinationFile
from lakecdp.activation.sms import SmsDestination, message_text, plan_messages, sms_length
from lakecdp.config import ConfigError


def _sms(**overrides) -> SmsDestination:
    raw = {
        "version": 1,
        "type": "sms",
        "template": "welcome.sms.txt",
        "gateway": {"url": "https://sms.example.com/v1", "auth": {"type": "bearer", "token_env": "SMS_TOKEN"}},
    }
    raw.update(overrides)
    return DestinationFile.model_validate(raw).root


@pytest.mark.parametrize(
    "text, encoding, units, segments",
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),  # 153 per segment once split
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension table: escape + char, 2 septets each
        ("€" * 81, "GSM-7", 162, 2),
        ("[x]" + "a" * 155, "GSM-7", 160, 1),  # [ and ] count twice
        ("é" * 160, "GSM-7", 160, 1),  # é is in the basic table
        ("ł" * 70, "UCS-2", 70, 1),  # ł is not: the whole text is UCS-2
        ("ł" * 71, "UCS-2", 71, 2),  # 67 per segment once split
        ("ł" * 134, "UCS-2", 134, 2),
        ("ł" * 135, "UCS-2", 135, 3),
        ("Hi 😀", "UCS-2", 5, 1),  # an emoji is two UTF-16 units
        ("", "GSM-7", 0, 1),
    ],
)
def test_length_encoding_and_segments(text, encoding, units, segments):
    length = sms_length(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_message_text_drops_blank_lines_and_indentation():
    assert message_text("Hi Ada,\n\n  Picked for you: Kettle  \n\n") == "Hi Ada,\nPicked for you: Kettle"


@pytest.mark.parametrize(
    "country, utc, quiet",
    [
        ("GB", datetime(2026, 7, 1, 19, 59, tzinfo=timezone.utc), False),  # 20:59 BST
        ("GB", datetime(2026, 7, 1, 20, 0, tzinfo=timezone.utc), True),  # 21:00 BST
        ("GB", datetime(2026, 12, 1, 20, 30, tzinfo=timezone.utc), False),  # 20:30 GMT
        ("GB", datetime(2026, 12, 1, 7, 59, tzinfo=timezone.utc), True),  # 07:59 GMT
        ("GB", datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc), False),  # 08:00 GMT
        ("United Kingdom", datetime(2026, 7, 1, 20, 0, tzinfo=timezone.utc), True),
        ("DE", datetime(2026, 7, 1, 19, 30, tzinfo=timezone.utc), True),  # 21:30 CEST
        ("US", datetime(2026, 7, 1, 19, 30, tzinfo=timezone.utc), False),  # 15:30 EDT
        ("US", datetime(2026, 7, 2, 3, 0, tzinfo=timezone.utc), True),  # 23:00 EDT
        ("JP", datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc), True),  # 21:00 JST
        (None, datetime(2026, 7, 1, 20, 0, tzinfo=timezone.utc), True),  # default zone: London
        ("XX", datetime(2026, 7, 1, 19, 0, tzinfo=timezone.utc), False),  # unknown: London, 20:00
    ],
)
def test_quiet_hours_in_the_customers_time_zone(country, utc, quiet):
    assert _sms().in_quiet_hours(country, utc) is quiet


def test_configured_zones_and_daytime_quiet_hours():
    sms = _sms(time_zones={"us": "America/Los_Angeles"}, quiet_hours={"start": "12:00", "end": "14:00"})
    assert sms.zone_for("US").key == "America/Los_Angeles"
    assert sms.in_quiet_hours("US", datetime(2026, 7, 1, 19, 30, tzinfo=timezone.utc))  # 12:30 PDT
    assert not sms.in_quiet_hours("GB", datetime(2026, 7, 1, 19, 30, tzinfo=timezone.utc))  # 20:30 BST


def test_each_change_gets_one_fate():
    sms = _sms(max_segments=1)
    noon = datetime(2026, 7, 1, 11, 0, tzinfo=timezone.utc)  # 12:00 London, 07:00 New York
    rows = [
        {
            "idempotency_key": f"k{n}",
            "change_id": f"ch{n}",
            "segment_id": "vip",
            "customer_id": c,
            "phone": phone,
            "country": country,
        }
        for n, (c, phone, country) in enumerate(
            [
                ("c1", "07700 900001", "GB"),  # national number, GB region -> +447700900001
                ("c2", "+447700900002", "GB"),  # no consent
                ("c3", None, "GB"),  # no phone
                ("c4", "+12025550104", "US"),  # 07:00 in New York: quiet
                ("c5", "+447700900005", "GB"),  # text too long for one segment
                ("c6", "+447700900006", "GB"),  # consent withdrawn (False)
            ],
            start=1,
        )
    ]
    consent = {"c1": True, "c3": True, "c4": True, "c5": True, "c6": False}
    texts = {"c1": "Hi Ann", "c3": "Hi", "c4": "Hi", "c5": "x" * 161}
    plan = plan_messages(sms, rows, consent=consent, texts=texts, now=noon)
    assert plan.send == [
        {
            "idempotency_key": "k1",
            "change_id": "ch1",
            "segment_id": "vip",
            "customer_id": "c1",
            "to": "+447700900001",
            "text": "Hi Ann",
            "encoding": "GSM-7",
            "sms_segments": 1,
        }
    ]
    assert [r["customer_id"] for r in plan.no_consent] == ["c2", "c6"]
    assert [r["customer_id"] for r in plan.no_phone] == ["c3"]
    assert [r["customer_id"] for r in plan.deferred] == ["c4"]
    assert [(r["customer_id"], why) for r, why in plan.too_long] == [
        ("c5", "message needs 2 GSM-7 segments (161 units), max_segments is 1")
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"gateway": {"url": "https://sms.example.com/v1", "headers": {"X-Api-Key": "abc123"}}}, "inline secret"),
        ({"gateway": {"url": "https://user:pw@sms.example.com/v1"}}, "holds credentials"),
        ({"gateway": {"url": "http://169.254.169.254/latest"}}, "cloud metadata"),
        ({"gateway": {"url": "http://127.0.0.1:9/"}}, "allowed only with allow_private_network"),
        ({"gateway": {"url": "https://sms.example.com", "timeout_seconds": 0}}, "greater than 0"),
        ({"default_time_zone": "Mars/Olympus"}, "unknown IANA time zone 'Mars/Olympus'"),
        ({"time_zones": {"GB": "Europe/Londn"}}, "time_zones.GB: unknown IANA time zone"),
        ({"quiet_hours": {"start": "9pm"}}, "time must be HH:MM"),
        ({"template": "welcome.html"}, "must be a .txt file"),
        ({"template": "../secrets.txt"}, "must be a .txt file"),
        ({"max_segments": 0}, "greater than or equal to 1"),
        ({"sender": "Shop"}, "Extra inputs are not permitted"),
    ],
)
def test_config_refuses(overrides, message):
    with pytest.raises(ValueError, match=message):
        _sms(**overrides)


def test_shipped_sms_destination_validates_through_the_cli(capsys, tmp_path):
    from pathlib import Path

    from lakecdp.cli import main

    shipped = Path(__file__).resolve().parents[1] / "conf"
    assert main(["--conf", str(shipped), "--env", "local", "validate-destinations"]) == 0
    assert "ok: demo_sms (sms)\n" in capsys.readouterr().out

    # a template that is not there names the file and field
    conf = tmp_path / "conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "destinations").mkdir()
    (conf / "environments" / "local.yaml").write_text("version: 1\nname: local\n", encoding="utf-8")
    (conf / "destinations" / "text.yaml").write_text(
        "version: 1\ntype: sms\ntemplate: nope.txt\ngateway: {url: 'https://sms.example.com/v1'}\n", encoding="utf-8"
    )
    assert main(["--conf", str(conf), "--env", "local", "validate-destinations"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"ERROR {conf / 'destinations' / 'text.yaml'}: template: 'nope.txt' is not a file in ")


def test_config_error_type_is_a_config_error_from_the_loader(tmp_path):
    from lakecdp.activation.config import load_destinations

    (tmp_path / "destinations").mkdir()
    (tmp_path / "destinations" / "text.yaml").write_text(
        "version: 1\ntype: sms\ntemplate: a.txt\ngateway: {url: 'https://sms.example.com', "
        "headers: {Authorization: 'Bearer abc'}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="text.yaml") as caught:
        load_destinations(tmp_path)
    assert "abc" not in str(caught.value)  # a refused value may be a secret: never repeated
