"""Run in a venv with tinker's SDK (scripts/stacks/tinker.sh): load `ftdata export OUT --to tinker` as
`tinker.Datum`s (`ModelInput.model_validate`, then `Datum`, which turns the lists into its int64 / float32
tensors) and print, per datum, the sequence it trains and which tokens
carry weight, unshifted again (token i+1 is trained when weights[i] > 0; token 0 is never a target):

    {"row": i, "input_ids": [...], "loss_mask": [...]}

    python read_tinker.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

import tinker


def main() -> None:
    folder = Path(sys.argv[1])
    with (folder / "train.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            given = json.loads(line)
            datum = tinker.Datum(
                model_input=tinker.ModelInput.model_validate(given["model_input"]),
                loss_fn_inputs=given["loss_fn_inputs"],
            )
            inputs = datum.model_input.to_ints()
            targets = [int(t) for t in datum.loss_fn_inputs["target_tokens"].tolist()]
            weights = [float(w) for w in datum.loss_fn_inputs["weights"].tolist()]
            if inputs[1:] != targets[:-1]:
                raise SystemExit(f"datum {i}: target_tokens are not the input tokens shifted by one")
            ids, mask = inputs + targets[-1:], [0] + [int(w > 0) for w in weights]
            print(json.dumps({"row": i, "input_ids": ids, "loss_mask": mask}), flush=True)


if __name__ == "__main__":
    main()
