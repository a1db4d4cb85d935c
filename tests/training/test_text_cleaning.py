from tierwise.training.text_cleaning import (
    canonical_choices,
    chat_to_text,
    clean_prompt,
    dedup_key,
    drop_few_shot,
    unwrap_list_repr,
)

FEW_SHOT = (
    "['Please answer with the letter of the correct answer.\\n\\nWhich is a fruit?\\nA) apple\\nB) rock\\n"
    'Print only a single choice  from "A" or "B" without explanation. Answer:\\nA\\n\\n'
    "Please answer with the letter of the correct answer.\\n\\nWhich is hot?\\nA) ice\\nB) fire\\n"
    'Print only a single choice  from "A" or "B" without explanation. Answer:\']'
)


def test_few_shot_examples_and_boilerplate_are_removed():
    assert clean_prompt(FEW_SHOT) == "Which is hot?\nA) ice\nB) fire"


def test_list_repr_is_unwrapped_and_other_text_left_alone():
    assert unwrap_list_repr("['a', 'b']") == "a\n\nb"
    assert unwrap_list_repr("[not a list") == "[not a list"


def test_choice_layouts_become_one_layout():
    assert canonical_choices("Q?\nA. one\nB. two") == "Q?\nA) one\nB) two"
    assert canonical_choices("Q?\n(A) one\n(B) two") == "Q?\nA) one\nB) two"
    # A lone "A." at a line start is not a choice list.
    assert canonical_choices("A. Lincoln was president.") == "A. Lincoln was president."


def test_mmlu_header_and_answer_suffix_are_removed():
    text = "The following are multiple choice questions (with answers) about physics.\n\nWhat is g?\nA. 9.8\nB. 1\nAnswer:"
    assert clean_prompt(text) == "What is g?\nA) 9.8\nB) 1"


def test_question_prefix_is_removed():
    assert clean_prompt("Q: How many legs does a cat have?") == "How many legs does a cat have?"


def test_drop_few_shot_keeps_text_without_examples():
    assert drop_few_shot("Just a question?") == "Just a question?"


def test_chat_transcript_turns():
    assert (
        chat_to_text("### Human: hi ### Assistant: hello ### Human: bye ### Assistant:")
        == "hi\n\nhello\n\nbye"
    )


def test_dedup_key_ignores_case_punctuation_and_spacing():
    assert dedup_key("What is  2+2?") == dedup_key("what is 2 + 2")
    assert dedup_key("What is 2+2?") != dedup_key("What is 2+3?")
