"""`make bench`: classifier latency, HTTP load with micro-batching on and off, PyTorch eager beside it.

    python -m tools.bench [--duration 20] [--concurrency 1,8,32,64] [--model models/default]

Prints a markdown table (and writes it to --output if given). The HTTP runs start the real service
(`python -m tierwise.service`) through tools/harness.py and drive it with its keep-alive HTTP/1.1
client. The shadow evaluation overhead (serving/tierwise/evidence/shadow.py) on /classify: a service whose
policy has a `shadow` section at share 0.1, calling tools/fake_llm.py, against one without, driven in
turn in alternated pairs of runs (`--shadow-overhead` runs only this part).
The PyTorch comparison serves the same model folder's tokenizer and policy behind the same API with
a `transformers` eager model: the training checkpoint when one is found, else the base model with an
untrained head (same architecture and cost). Only tools/bench/torch_eager.py imports torch and
training code, and only inside its functions.

Modules: `prompts` (the prompt pool), `latency` (in-process), `http_load` (closed-loop HTTP load),
`shadow` (the shadow overhead runs), `torch_eager` (the PyTorch comparison and the stand-in model),
`report` (the markdown), `cli` (flags and the order of the runs).
"""
