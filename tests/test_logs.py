import logging

from telebridge.logs import RedactingFilter, mask_number, scrub


def test_mask_number_keeps_only_last_four_digits():
    assert mask_number("+14155550123") == "+*******0123"
    assert mask_number("") == ""
    assert mask_number("123") == "***"


def test_scrub_masks_numbers_and_secrets_but_not_ordinary_figures():
    line = "call from +1 (415) 555-0123 to 4155550199 auth_token=abc123 took 12.5 ms, seq 1234567"
    out = scrub(line)
    assert "555-0123" not in out and "4155550199" not in out and "abc123" not in out
    assert "0123" in out and "12.5 ms" in out and "1234567" in out


def test_filter_rewrites_records_from_any_library():
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "dialing %s", ("+442071234567",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "dialing +********4567"
