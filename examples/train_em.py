"""Train a non-autoregressive translator with EM (Sun & Yang, ICML 2020) and print a results table.

With no arguments it runs the embedded default: a synthetic translation task with controlled multi-modality that
the package generates, about 10 minutes on a 2-core CPU:

    accelerate launch examples/train_em.py

Real data (local text pairs by prefix, TSV or JSONL files, or a `datasets` name), a pretrained AR, sizes, rounds:

    accelerate launch examples/train_em.py --train ../shared/data/multi30k_en_de/train \
        --validation ../shared/data/multi30k_en_de/valid --source_lang en --target_lang de \
        --output_dir runs/multi30k --num_rounds 2 --num_candidates 20 --d_model 256 --encoder_layers 5
    accelerate launch examples/train_em.py --dataset_name wmt16 --dataset_config de-en --source_lang en \
        --target_lang de --ar_model Helsinki-NLP/opus-mt-en-de --train_initial_ar false
    # several processes (CPU): python -m torch.distributed.run --nproc_per_node 2 examples/train_em.py ...

Every `EMTrainingArguments` field is an option (`--help`). Re-running the same command resumes an interrupted run.

Output: progress bars (redrawn at most once a minute when stderr is not a terminal), one line per phase, and the
results tables on the console; everything else (library messages, checkpoint saves, per-update losses) in
`<output_dir>/train.log`. With `--push_to_hub` the rounds are pushed last, after the results, the test scores and the
model card are written; a failed push is reported at the end (exit status 1) and the same command pushes what is
still pending, without training again.
"""

import os
import sys

from em_nat import EMTrainer
from em_nat.hub import HubPushError
from em_nat.logging_setup import run_logging
from em_nat.train_cli import (
    build_models,
    load_data,
    parse_args,
    prepare_output_dir,
    use_all_cores_when_alone,
    write_local_results,
)
from em_nat.trainers import make_accelerator

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def main(argv=None):
    """Train (or resume), write and print the results, score the test split, write the model card; then push when
    asked. Local work always comes first: a failed push exits with status 1 only after all of it is written."""
    script, em = parse_args(sys.argv[1:] if argv is None else argv, PRESET_DIR)
    accelerator = make_accelerator(em)
    prepare_output_dir(em, accelerator)
    with run_logging(em.output_dir, main_process=accelerator.is_main_process):
        use_all_cores_when_alone()
        data = load_data(script, em)
        tokenizer, ar, nat = build_models(script, em, data)
        eval_split = data["validation"] if "validation" in data else None
        trainer = EMTrainer(ar, nat, tokenizer, data["train"], eval_split, args=em, accelerator=accelerator)
        trainer.train(push=False)  # pushes come last, below
        test_result, example = None, None
        if accelerator.is_main_process:
            test_result, example = write_local_results(script, em, data)
        if em.push_to_hub:
            try:
                trainer.push(test_result=test_result, example=example)  # main process only
            except HubPushError as error:  # raised after every local output is written
                sys.exit(f"Hub push failed: {error}")


if __name__ == "__main__":
    main()
