"""What the classifier reads from a request: the task first, the context sketched."""

import pytest
from tierwise.core.request_text import ClassifierInput, RequestTextError, record_text, request_input

LONG_SYSTEM = "You are Acme's support assistant. Follow the refund policy. " * 60


def test_plain_text_is_the_task_alone():
    read = request_input({"text": "What is the capital of France?"})
    assert read == ClassifierInput.plain("What is the capital of France?")
    assert read.sketch == "" and read.text == "What is the capital of France?"


def test_single_user_message_reads_like_plain_text():
    assert request_input({"messages": [{"role": "user", "content": "hi"}]}) == ClassifierInput.plain("hi")


def test_the_last_user_turn_is_the_task_and_the_system_prompt_only_sketched():
    read = request_input(
        {
            "messages": [
                {"role": "system", "content": LONG_SYSTEM},
                {"role": "user", "content": "Integrate x^2 from 0 to 3."},
                {"role": "assistant", "content": "9"},
                {"role": "user", "content": "Convert 5 km to miles."},
            ]
        }
    )
    assert read.task == "Convert 5 km to miles."
    assert read.sketch.startswith("system prompt long; earlier turns 1")
    assert "previous: Integrate x^2 from 0 to 3." in read.sketch
    assert "system: You are Acme" in read.sketch
    assert len(read.sketch) < 1400  # the system prompt is cut, the full text keeps every word
    assert LONG_SYSTEM.strip() in read.text and read.text.endswith("Convert 5 km to miles.")


def test_developer_role_content_parts_and_tools_are_read():
    read = request_input(
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "You are a coding agent."}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "1", "content": "```python\nprint(1)\n```"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Write a commit message."},
                        {"type": "image_url", "image_url": {"url": "data:,"}},
                    ],
                },
            ],
            "tools": [{"type": "function", "function": {"name": "run_tests", "parameters": {}}}],
        }
    )
    assert read.task == "Write a commit message."
    assert "tools run_tests read_file" in read.sketch
    assert "tool results" in read.sketch and "attachments" in read.sketch and "code in context" in read.sketch


def test_record_text_keeps_every_word_context_first():
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]}
    assert record_text(body) == "Be brief.\n\nWhy?"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({}, "needs a 'text'"),
        ({"text": "  "}, "empty"),
        ({"text": 3}, "must be a string"),
        ({"messages": []}, "at least one message"),
        ({"messages": "hi"}, "list of"),
        ({"messages": [{"role": "user", "content": ""}]}, "no text content"),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": "x"}, "'tools' must be a list"),
        ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ],
)
def test_unusable_requests_name_the_problem(record, message):
    with pytest.raises(RequestTextError, match=message):
        request_input(record)
