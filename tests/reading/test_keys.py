from costinfer.reading.keys import canonical, request_key
from costinfer.reading.rows import RowSpec, build

SPEC = RowSpec(model="gpt-4o-mini", max_tokens=64)


def body(**row: object) -> dict[str, object]:
    req = build(0, 1, {"prompt": "What is the refund policy?", **row}, SPEC)
    assert not hasattr(req, "reason"), req
    return req.body  # type: ignore[union-attr]


def test_key_ignores_row_id_and_metadata() -> None:
    a = request_key(body(id="a", metadata={"x": 1}), "openai")
    b = request_key(body(id="b", metadata={"x": 2}), "openai")
    assert a == b


def test_key_changes_with_everything_that_changes_the_answer() -> None:
    base = request_key(body(), "openai")
    variants = [
        body(temperature=0.5),
        body(top_p=0.9),
        body(max_tokens=65),
        body(seed=1),
        body(stop=["\n"]),
        body(model="gpt-4o"),
        body(system="Be brief."),
        body(response_format={"type": "json_object"}),
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
    ]
    keys = {request_key(v, "openai") for v in variants}
    assert base not in keys
    assert len(keys) == len(variants)
    # the same request on another server is another answer
    assert request_key(body(), "vllm:http://127.0.0.1:8000/v1") != base


def test_system_field_equals_a_leading_system_message() -> None:
    with_field = body(system="Be brief.")
    as_messages = build(
        0,
        1,
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the refund policy?"},
            ]
        },
        SPEC,
    )
    assert request_key(with_field, "openai") == request_key(as_messages.body, "openai")  # type: ignore[union-attr]


def test_integer_and_float_temperature_are_the_same_request() -> None:
    assert request_key(body(temperature=1), "openai") == request_key(body(temperature=1.0), "openai")


def test_canonical_form_is_documented_shape() -> None:
    text = canonical(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "id": "x"}, "openai"
    )
    assert text == (
        b'{"body":{"max_tokens":5,"messages":[{"content":"hi","role":"user"}],"model":"m"},"endpoint":"openai","v":1}'
    )
    assert b"api_key" not in text and b'"id"' not in text


# --- the fast key maker gives exactly the reference keys -------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from costinfer.reading.keys import _SLOT, KeyMaker, normalized_key, semantic_key  # noqa: E402

_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["Hello  World", "ÉCOLE ﬁne", "  spaced\tout\n", "café", "UPPER", "x", _SLOT, f"a{_SLOT}b"]),
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": _texts},
    optional={"name": st.text(max_size=5)},
)
_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku"]),
        "messages": st.lists(_message, min_size=1, max_size=4),
        "max_tokens": st.integers(1, 64),
    },
    optional={
        "temperature": st.one_of(st.none(), st.floats(0, 2)),
        "stop": st.lists(_texts, min_size=1, max_size=2),
        "seed": st.integers(0, 9),
        "metadata": st.dictionaries(st.text(max_size=3), st.integers()),
        "tools": st.just([{"type": "function", "function": {"name": "f", "description": _SLOT}}]),
    },
)

# Bodies the fast path takes (the last message a plain user message), mixed with any: drawn alone, ``_bodies`` sent
# nine in ten examples to the reference, which then only compared the reference with itself
_plain_texts = st.one_of(st.text(max_size=40), st.sampled_from(["Hello  World", "ÉCOLE ﬁne", "café", "UPPER"]))
_fast_bodies = st.builds(
    lambda body, history, text: {**body, "messages": [*history, {"role": "user", "content": text}]},
    st.fixed_dictionaries(
        {"model": st.sampled_from(["gpt-4o-mini", "gpt-4o"]), "max_tokens": st.integers(1, 64)},
        optional={"temperature": st.floats(0, 2), "seed": st.integers(0, 9)},
    ),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "assistant"]), "content": _plain_texts})),
    _plain_texts,
)
_mixed_bodies = st.one_of(_fast_bodies, _fast_bodies, _bodies)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(_mixed_bodies, min_size=1, max_size=6), endpoint=st.sampled_from(["openai", "simulate"]))
def test_key_maker_matches_the_reference_functions(bodies: list[dict[str, object]], endpoint: str) -> None:
    maker = KeyMaker(endpoint)
    for body in [*bodies, *bodies]:  # the second pass reads the memo
        exact, normal, group = maker.keys(body)
        assert exact == request_key(body, endpoint)
        assert normal == normalized_key(body, endpoint)
        assert group == semantic_key(body, endpoint)


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=30))
def test_normalizing_ascii_text_collapses_white_space_like_split_and_join(text: str) -> None:
    from costinfer.reuse.guards import normalize_text

    assert normalize_text(text) == " ".join(text.lower().split())


def test_the_key_fast_path_runs_in_most_examples_it_is_checked_on() -> None:
    """The property above compares the fast path with the reference; where the fast path hands a body to the
    reference, it compares the reference with itself. Count that: most bodies must take the fast path. Derandomized:
    the share varies with the draw, and a share just over half on an unlucky draw once failed a run that changed
    nothing here."""
    tally = {"bodies": 0, "reference": 0}

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(bodies=st.lists(_mixed_bodies, min_size=1, max_size=6), endpoint=st.sampled_from(["openai", "simulate"]))
    def check(bodies: list[dict[str, object]], endpoint: str) -> None:
        maker = KeyMaker(endpoint)
        reference = maker._reference
        calls: list[int] = []

        def counted(body: dict[str, object]) -> tuple[str, str, str | None]:
            calls.append(1)
            return reference(body)  # type: ignore[arg-type]

        maker._reference = counted  # type: ignore[method-assign]
        for body in bodies:
            assert maker.keys(body)[0] == request_key(body, endpoint)
        tally["bodies"] += len(bodies)
        tally["reference"] += len(calls)

    check()
    assert tally["bodies"] > 0 and tally["reference"] <= 0.5 * tally["bodies"], tally
