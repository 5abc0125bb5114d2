"""The fast path for plain rows builds exactly what the field-by-field reader builds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from costinfer.reading.request import Request
from costinfer.reading.rows import RowSpec, build, build_any

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "  ", "gpt-4o", "Be brief.", "row-7"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_rows = st.dictionaries(
    st.sampled_from(["prompt", "text", "id", "uid", "model", "max_tokens", "system", "metadata", "temperature"]),
    _values,
    max_size=6,
)
_specs = st.builds(
    RowSpec,
    model=st.just("gpt-4o-mini"),
    max_tokens=st.sampled_from([16, 512]),
    prompt_field=st.sampled_from(["prompt", "text"]),
    id_field=st.sampled_from(["id", "uid"]),
    system=st.sampled_from([None, "You label intents."]),
)


def _fields(value: Request) -> tuple[object, ...]:
    return (value.row_idx, value.line, value.row_id, value.body, value.metadata, value.priority, value.extra)


@settings(max_examples=600, deadline=None)
@given(row=_rows, spec=_specs, idx=st.integers(0, 5))
def test_plain_rows_build_the_same_request_either_way(row: dict[str, object], spec: RowSpec, idx: int) -> None:
    fast, reference = build(idx, idx + 1, row, spec), build_any(idx, idx + 1, row, spec)
    assert type(fast) is type(reference)
    if isinstance(fast, Request):
        assert isinstance(reference, Request)
        assert _fields(fast) == _fields(reference)
    else:
        assert fast == reference


def test_a_plain_row_keeps_its_prompt_id_and_defaults() -> None:
    spec = RowSpec(model="gpt-4o-mini", max_tokens=64, system="Be brief.")
    req = build(3, 4, {"id": 17, "prompt": "Hi", "metadata": {"k": 1}}, spec)
    assert isinstance(req, Request)
    assert req.row_id == "17" and req.metadata == {"k": 1}
    assert req.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 64,
    }


def test_the_row_fast_path_runs_in_most_examples_it_is_checked_on() -> None:
    """Where the fast path declines a row (returns None), the property above compares the reference with itself.
    On plain rows, the kind most datasets are made of, the fast path must take nearly every row and agree."""
    from costinfer.reading.rows import _build_plain

    tally = {"rows": 0, "fast": 0}
    plain_rows = st.fixed_dictionaries(
        {"prompt": st.text(min_size=1, max_size=20).filter(str.strip)},
        optional={
            "id": st.one_of(st.integers(0, 10**6), st.text(min_size=1, max_size=8)),
            "model": st.sampled_from(["gpt-4o", "gpt-4o-mini"]),
            "max_tokens": st.integers(1, 4096),
            "system": st.text(min_size=1, max_size=10),
            "metadata": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        },
    )

    @settings(max_examples=300, deadline=None)
    @given(row=plain_rows, spec=_specs.filter(lambda s: s.prompt_field == "prompt" and s.id_field == "id"))
    def check(row: dict[str, object], spec: RowSpec) -> None:
        fast = _build_plain(0, 1, row, spec)
        tally["rows"] += 1
        if fast is not None:
            tally["fast"] += 1
            reference = build_any(0, 1, row, spec)
            assert isinstance(reference, Request) and _fields(fast) == _fields(reference)

    check()
    assert tally["fast"] >= 0.95 * tally["rows"], tally
