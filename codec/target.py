"""Finding the quality that meets a target file size or PSNR (as cwebp -size, -psnr).

One set of weights covers every rate, so a target is met by encoding the image
at a few whole qualities and keeping the right one. Qualities are calibrated
to even steps of file size (`models.calibration`): the log of the size, and
roughly the PSNR, grow about linearly with the quality, so interpolating
between the bracket's ends usually lands within a step or two.
"""

from __future__ import annotations

from collections.abc import Callable

LOWEST, HIGHEST = 0, 100


def crossing(
    value: Callable[[int], float], target: float
) -> tuple[int | None, int | None]:
    """Where ``value`` of the whole qualities 0-100, increasing, reaches ``target``.

    Returns ``(below, reached)``: the highest quality whose value is under the
    target and the next one, which reaches it. ``below`` is None when quality
    0 already reaches the target, ``reached`` None when quality 100 does not.
    Each quality is evaluated at most once: both ends, then guesses
    interpolated between the ends of the bracket (3-5 evaluations in all on a
    smooth curve). Interpolation on a bent curve can creep up on the answer
    from one side, a step at a time: after three guesses in a row that moved
    the same end, the next one halves the bracket. If ``value`` is not quite
    monotonic, the pair is still adjacent, with
    ``value(below) < target <= value(reached)``.
    """
    low, high = LOWEST, HIGHEST
    at_low, at_high = value(low), value(high)
    if at_low >= target:
        return None, low
    if at_high < target:
        return high, None
    moved, streak = None, 0  # which end the last guesses moved, how often in a row
    while high - low > 1:
        if streak < 3:
            share = (target - at_low) / (at_high - at_low)
            guess = round(low + share * (high - low))
        else:
            guess, streak = (low + high) // 2, 0
        guess = min(max(guess, low + 1), high - 1)
        at_guess = value(guess)
        end = "low" if at_guess < target else "high"
        if end == "low":
            low, at_low = guess, at_guess
        else:
            high, at_high = guess, at_guess
        streak = streak + 1 if end == moved else 1
        moved = end
    return low, high
