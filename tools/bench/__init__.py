"""`make bench`: classifier latency, HTTP load with micro-batching on and off, PyTorch eager beside it.

    python -m tools.bench [--duration 20] [--concurrency 1,8,32,64] [--model models/default]

Prints a markdown table (and writes it to --output if given). The HTTP runs start the real service
(`python -m tierwise.service`) through tools/harness.py and drive it with its keep-alive HTTP/1.1
client. The paired overhead runs on /classify, services that differ by one policy section driven in
turn in alternated (ABBA) pairs of runs, Δ against the run-to-run noise of the base service:
- the shadow evaluation (serving/tierwise/evidence/shadow.py): "off" (no `shadow` section) vs "on"
  (a `shadow` section at share 0.1, calling tools/fake_llm.py in its own process);
- the per-segment risk controller (serving/tierwise/evidence/segment_control.py) on the request path:
  "off" vs "guarded" ("off" plus `segment_control: {max_under_routing: 0.05, judge_error_rate: 0.1,
  refresh_seconds: 1}`, so its refresh thread runs during the load; no shadow in either);
- the controller as deployed: "on" vs "control" ("on" plus the same `segment_control`): with it the
  shadow also judges every tier below the top and samples more where a segment's bound is wide, and
  that extra work shares the cores with the requests (and, here, with the fake LLM server).
Half their requests carry one of 8 routes (by a hash of the text), so both segment paths run: the
route, and the model folder's automatic segment (`segments.npz`, when it has one). The comparisons'
pairs are interleaved per level. `--shadow-overhead` runs only these (all three comparisons),
`--controller-overhead` only the controller's two; `--skip-shadow` leaves them out.
The PyTorch comparison serves the same model folder's tokenizer and policy behind the same API with
a `transformers` eager model: the training checkpoint when one is found, else the base model with an
untrained head (same architecture and cost). Only tools/bench/torch_eager.py imports torch and
training code, and only inside its functions.

Modules: `prompts` (the prompt pool), `latency` (in-process), `http_load` (closed-loop HTTP load),
`shadow` (the paired overhead runs: shadow and controller), `torch_eager` (the PyTorch comparison
and the stand-in model), `report` (the markdown), `cli` (flags and the order of the runs).
"""
