"""The soxr length rule: `resampled_length` equals `len(soxr.resample(x, rate_in, rate_out))` for every length and
pair of rates, mono and stereo (and the mono downmix the collator makes), at the exact halves too."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import soxr
from audio_support import RATES, tone
from hypothesis import given, settings
from hypothesis import strategies as st

from ftdata.media.audio_files import resample, resampled_length

PAIRS = [(a, b) for a in (*RATES, 11025, 24000, 32000, 96000) for b in (*RATES, 11025, 24000, 32000, 96000)]


def _soxr_length(frames: int, rate_in: int, rate_out: int, channels: int = 1) -> int:
    x = np.zeros((frames, channels), np.float32) if channels > 1 else np.zeros(frames, np.float32)
    return len(soxr.resample(x, rate_in, rate_out))


@settings(max_examples=80, deadline=None)
@given(pair=st.sampled_from(PAIRS), frames=st.one_of(st.integers(0, 400), st.integers(0, 1_500_000)))
def test_the_rule_is_soxrs_length(pair, frames):
    assert resampled_length(frames, *pair) == _soxr_length(frames, *pair)


def _exact_halves(rate_in: int, rate_out: int, count: int) -> list[int]:
    """The first `count` lengths whose exact resampled length n * out / in ends in .5 (none when in / gcd is odd)."""
    g = math.gcd(rate_in, rate_out)
    a, b = rate_in // g, rate_out // g
    if a % 2:
        return []
    first = (a // 2) * pow(b, -1, a) % a  # n * b = a / 2 (mod a)
    return [first + k * a for k in range(count)]


def test_exact_halves_follow_soxr_not_a_rational_rounding():
    """At an exact .5 soxr's double-precision division decides: 48 kHz -> 44.1 kHz rounds 220.5 down, a rational
    round-half-up says 221 and a floor says 220 where soxr says 221 (e.g. 16 kHz -> 22.05 kHz)."""
    assert (resampled_length(240, 48000, 44100), _soxr_length(240, 48000, 44100)) == (220, 220)
    seen_down = seen_up = 0
    for pair in [(48000, 44100), (16000, 22050), (8000, 22050), (44100, 16000), (48000, 22050), (32000, 44100)]:
        for n in _exact_halves(*pair, 40):
            got = _soxr_length(n, *pair)
            assert resampled_length(n, *pair) == got
            half_up = math.floor(Fraction(n * pair[1], pair[0]) + Fraction(1, 2))
            seen_down += got == half_up - 1
            seen_up += got == half_up
    assert seen_down and seen_up  # both happen: neither rational rounding is the rule


def test_to_16k_from_the_common_rates_never_meets_a_half():
    """To 16 kHz from 8/16/22.05/44.1/48 kHz the exact length is never n + .5, so it is the nearest integer there."""
    for rate in RATES:
        assert not _exact_halves(rate, 16000, 1)


@pytest.mark.parametrize("rate", RATES)
def test_stereo_and_its_mono_downmix_resample_to_the_same_length(rate):
    for frames in (1, 159, 4410, 48001):
        stereo = tone(frames, rate, 2)
        expected = resampled_length(frames, rate, 16000)
        assert len(resample(stereo, rate, 16000)) == expected
        assert len(resample(stereo.mean(axis=1), rate, 16000)) == expected


@pytest.mark.slow
def test_the_rule_over_every_short_length():
    for rate_in, rate_out in PAIRS:
        for frames in range(2000):
            assert resampled_length(frames, rate_in, rate_out) == _soxr_length(frames, rate_in, rate_out)
