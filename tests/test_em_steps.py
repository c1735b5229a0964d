"""The EM steps checked against independent recomputations (PAPER.md, "The EM loop", "Corpus-level multi-modality").

- E-step: `score_candidates` equals the NAT's log-likelihood of each (source, candidate) pair scored alone, on
  ragged candidates spread over several batches; a saved round's selection is the argmax of the saved NAT's scores.
- CM: `corpus_multimodality` on hand-built values; a round's recorded `em/cm` recomputed from its saved NAT and the
  NAT's saved training targets.
- Routing: round t's candidates come from AR_{t-1}, the NAT trains on their 1-best (or on the previous selection),
  and AR_t trains on the selection.

Reference log-likelihoods come from the NAT's `forward` logits (`log p_len(|y| | x) + sum_k log p(y_k | x, |y|)`),
one pair at a time without padding, so they share no code path with `score_targets`' batching.
"""

import json
import math

import pytest
import torch
from accelerate import Accelerator
from conftest import TINY_SIZES, tiny_models
from datasets import Dataset, load_from_disk
from transformers import MarianMTModel

import em_nat
from em_nat import EMTrainer, EMTrainingArguments
from em_nat.metrics import corpus_multimodality
from em_nat.trainers.candidates import score_candidates, strip_generated

MAX_SENTENCES = 8  # candidate generation / scoring batches: 72 training pairs -> 9 batches


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----- independent references ---------------------------------------------------------------------------------------


@torch.no_grad()
def reference_log_likelihood(nat, source: list[int], target: list[int]) -> float:
    """log p_len(|y| | x) + sum_k log p(y_k | x, |y|) of one pair, from `forward`'s logits, no padding anywhere."""
    nat.eval()
    labels = torch.tensor([target])
    out = nat(input_ids=torch.tensor([source]), labels=labels)
    length_term = out.length_logits[0].float().log_softmax(-1)[len(target)]
    token_terms = out.logits[0].float().log_softmax(-1).gather(-1, labels[0].unsqueeze(-1)).sum()
    return float(length_term + token_terms)


@torch.no_grad()
def score_targets_alone(nat, source: list[int], target: list[int]) -> float:
    """`nat.score_targets` on the single pair (source, target): batch of one, no padding."""
    nat.eval()
    return float(nat.score_targets(torch.tensor([source]), None, torch.tensor([target]))[0])


def argmax_lowest(scores: list[float]) -> int:
    """Index of the highest score; ties go to the lowest index."""
    best = 0
    for k, value in enumerate(scores):
        if value > scores[best]:
            best = k
    return best


# ----- E-step on hand-built ragged candidates -----------------------------------------------------------------------


def _ragged_candidates(tokenizer, sources, limit):
    """Per source 1..4 candidates of different lengths (1 to `limit` tokens, EOS-terminated); the third source gets
    one candidate of `limit + 1` tokens (too long for the NAT)."""
    generator = torch.Generator().manual_seed(7)
    special = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}
    content = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    counts = [1, 4, 3, 2, 4, 1, 3]
    candidates = []
    for i in range(len(sources)):
        rows = []
        for k in range(counts[i % len(counts)]):
            length = int(torch.randint(1, 21, (1,), generator=generator))
            if (i, k) == (1, 2):
                length = limit  # exactly as long as the NAT decodes: still scored
            if (i, k) == (2, 1):
                length = limit + 1  # one token too many: -inf
            body = content[torch.randint(len(content), (length - 1,), generator=generator)].tolist()
            rows.append(body + [tokenizer.eos_token_id])
        candidates.append(rows)
    return candidates


@pytest.mark.parametrize("decoder_input", ["positional", "uniform_copy"])
def test_score_candidates_equals_each_pair_scored_alone(tokenizer, pairs, decoder_input):
    torch.manual_seed(3)
    nat = em_nat.build_nat_model(tokenizer, **{**TINY_SIZES, "decoder_input": decoder_input}).eval()
    limit = nat.config.max_position_embeddings
    picks = [0, 5, 17, 30, 44, 58, 71, 9, 23]
    sources = [tokenizer(pairs[i][0])["input_ids"] for i in picks]
    sources[3] = tokenizer(pairs[30][0] + " " + pairs[31][0])["input_ids"]  # a longer source: padding in its batch
    assert len({len(s) for s in sources}) >= 3
    candidates = _ragged_candidates(tokenizer, sources, limit)
    assert len({len(c) for c in candidates}) >= 3 and len({len(t) for c in candidates for t in c}) >= 10

    scores = score_candidates(nat, sources, candidates, Accelerator(cpu=True), tokenizer.pad_token_id, max_sentences=2)

    assert [len(row) for row in scores] == [len(c) for c in candidates]
    checked = 0
    for i, (source, row) in enumerate(zip(sources, candidates)):
        for k, candidate in enumerate(row):
            if len(candidate) > limit:
                assert scores[i][k] == float("-inf"), (i, k)
                continue
            alone = score_targets_alone(nat, source, candidate)
            assert scores[i][k] == pytest.approx(alone, abs=1e-4), (i, k)
            assert alone == pytest.approx(reference_log_likelihood(nat, source, candidate), abs=1e-4), (i, k)
            assert math.isfinite(scores[i][k])
            checked += 1
    assert checked == sum(len(c) for c in candidates) - 1  # every candidate but the too-long one
    assert len(candidates[1][2]) == limit and math.isfinite(scores[1][2])
    assert scores[2][1] == float("-inf")


# ----- CM on hand-built values --------------------------------------------------------------------------------------


def test_corpus_multimodality_is_the_mean_negative_log_likelihood():
    assert corpus_multimodality([-2.0, -4.0, -9.0]) == pytest.approx(5.0)
    assert corpus_multimodality([-0.5]) == pytest.approx(0.5)
    assert corpus_multimodality([-1.0, -1.0, -1.0, -5.0]) == pytest.approx(2.0)  # a mean, not a sum or median
    assert corpus_multimodality([0.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        corpus_multimodality([])


def test_corpus_multimodality_counts_the_length_term(tokenizer, pairs, nat):
    """CM of a NAT on a few pairs = mean of -(length term + token terms), each term from `forward`'s logits."""
    sources = [tokenizer(s)["input_ids"] for s, _ in pairs[:5]]
    targets = [tokenizer(text_target=t)["input_ids"] for _, t in pairs[:5]]
    scores = score_candidates(nat, sources, [[t] for t in targets], Accelerator(cpu=True), tokenizer.pad_token_id, 2)
    length_terms, token_terms = [], []
    with torch.no_grad():
        for source, target in zip(sources, targets):
            out = nat(input_ids=torch.tensor([source]), labels=torch.tensor([target]))
            length_terms.append(float(out.length_logits[0].log_softmax(-1)[len(target)]))
            token_terms.append(float(out.logits[0].log_softmax(-1)[torch.arange(len(target)), target].sum()))
    expected = -sum(a + b for a, b in zip(length_terms, token_terms)) / len(targets)
    assert corpus_multimodality([row[0] for row in scores]) == pytest.approx(expected, abs=1e-4)
    assert min(-x for x in length_terms) > 1e-3  # the length term is a real part of the score here


# ----- a real two-round EM run (one per routing), shared by the tests below ----------------------------------------


def _dataset(pairs):
    return Dataset.from_dict({"translation": [{"src": s, "tgt": t} for s, t in pairs]})


def _args(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir),
        num_rounds=2,
        num_candidates=3,
        candidate_beam_size=4,
        ar_max_steps=30,
        nat_max_steps=30,
        warmup_steps=5,
        max_tokens=256,
        eval_steps=1000,
        save_steps=1000,
        ar_learning_rate=3e-3,
        nat_learning_rate=3e-3,
        max_target_length=24,
        generation_max_sentences=MAX_SENTENCES,
    )
    return EMTrainingArguments(**{**settings, **overrides})


def _run(tokenizer, pairs, output_dir, **overrides):
    """Train; return (args, metrics, {("nat"|"ar", round): the targets that phase was given})."""
    seen = {}
    original_nat, original_ar = EMTrainer.train_nat, EMTrainer.train_ar

    def train_nat(self, round_index, targets):
        seen["nat", round_index] = [list(t) for t in targets]
        return original_nat(self, round_index, targets)

    def train_ar(self, round_index, targets):
        seen["ar", round_index] = [list(t) for t in targets]
        return original_ar(self, round_index, targets)

    ar, nat = tiny_models(tokenizer)
    args = _args(output_dir, **overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EMTrainer, "train_nat", train_nat)
        patch.setattr(EMTrainer, "train_ar", train_ar)
        metrics = EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=args).train()
    return args, metrics, seen


@pytest.fixture(scope="module")
def one_best_run(tokenizer, pairs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("em_one_best") / "run"
    args, metrics, seen = _run(tokenizer, pairs, folder)  # AR_2 trained, so round 2 makes its selection too
    return folder, args, metrics, seen


@pytest.fixture(scope="module")
def previous_selection_run(tokenizer, pairs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("em_previous_selection") / "run"
    args, metrics, seen = _run(
        tokenizer,
        pairs,
        folder,
        nat_targets="previous_selection",
        train_raw_nat=False,
        ar_max_steps=100,
    )
    return folder, args, metrics, seen


def _sources(tokenizer, pairs, args):
    return tokenizer([s for s, _ in pairs], truncation=True, max_length=args.max_source_length)["input_ids"]


def _nat(folder, t):
    return em_nat.NATForConditionalGeneration.from_pretrained(folder / f"round-{t}" / "nat").eval()


ROUNDS = [1, 2]


@pytest.mark.parametrize("t", ROUNDS)
def test_saved_selection_is_the_argmax_of_the_saved_nat(one_best_run, tokenizer, pairs, t):
    folder, args, _, _ = one_best_run
    data = load_from_disk(str(folder / f"round-{t}" / "data"))
    nat = _nat(folder, t)
    sources = _sources(tokenizer, pairs, args)
    assert len(data) == len(sources) == len(pairs) > 0
    differs = 0
    for i, row in enumerate(data):
        assert len(row["candidate_ids"]) == args.num_candidates
        scores = [reference_log_likelihood(nat, sources[i], c) for c in row["candidate_ids"]]
        best = argmax_lowest(scores)
        assert row["selection"] == best, (i, scores, row["nat_scores"])
        assert row["selected_ids"] == row["candidate_ids"][best]
        assert row["nat_scores"] == pytest.approx(scores, abs=1e-4)
        differs += best != 0
    SELECTIONS_OFF_THE_1BEST[t] = differs


SELECTIONS_OFF_THE_1BEST = {}


def test_the_selection_checks_have_teeth():
    """Over the run's rounds the NAT picks other candidates than the beam's 1-best, so a selection that always took
    candidate 0 (or followed the AR's ranking) would fail the argmax test above. Runs after it (file order)."""
    assert set(SELECTIONS_OFF_THE_1BEST) == {1, 2}
    assert sum(SELECTIONS_OFF_THE_1BEST.values()) > 0


CM_ROUNDS = [0, 1, 2]


@pytest.mark.parametrize("t", CM_ROUNDS)
def test_recorded_cm_equals_cm_recomputed_from_the_saved_round(one_best_run, tokenizer, pairs, t):
    folder, args, _, seen = one_best_run
    recorded = json.loads((folder / f"round-{t}" / "metrics.json").read_text())["em/cm"]
    sources = _sources(tokenizer, pairs, args)
    if t == 0:  # the raw-data NAT trains on the real targets
        targets = tokenizer(text_target=[y for _, y in pairs], truncation=True, max_length=args.max_target_length)[
            "input_ids"
        ]
    else:
        targets = list(load_from_disk(str(folder / f"round-{t}" / "data"))["nat_target_ids"])
    assert len(targets) == len(sources) == len(pairs) > 0
    assert targets == seen["nat", t]  # the saved targets are what the NAT was trained on
    nat = _nat(folder, t)
    recomputed = corpus_multimodality([reference_log_likelihood(nat, s, y) for s, y in zip(sources, targets)])
    assert recorded == pytest.approx(recomputed, abs=1e-4)


@torch.no_grad()
def _beam_candidates(ar, source: list[int], args, tokenizer) -> list[list[int]]:
    """Top-N beam hypotheses of `ar` for one source (no padding), with the run's beam settings."""
    out = ar.generate(
        input_ids=torch.tensor([source]),
        num_beams=args.candidate_beam_size,
        num_return_sequences=args.num_candidates,
        max_new_tokens=args.max_target_length,
        do_sample=False,
    )
    start = ar.config.decoder_start_token_id
    return [strip_generated(row, tokenizer.pad_token_id, tokenizer.eos_token_id, start) for row in out]


ROUTING_SAMPLE = [0, 11, 26, 40, 53, 67]  # sources regenerated one at a time


@pytest.mark.parametrize("t", ROUNDS)
def test_round_t_candidates_come_from_the_previous_ar_and_the_nat_learns_their_1_best(
    one_best_run, tokenizer, pairs, t
):
    folder, args, _, seen = one_best_run
    candidates = list(load_from_disk(str(folder / f"round-{t}" / "candidates"))["candidate_ids"])
    data = load_from_disk(str(folder / f"round-{t}" / "data"))
    assert list(data["candidate_ids"]) == candidates
    one_best = [c[0] for c in candidates]
    assert list(data["nat_target_ids"]) == one_best == seen["nat", t]  # Y_t = 1-best of C_t (t = 1: plain KD)
    assert seen["ar", t] == list(data["selected_ids"])  # AR_t learns the NAT's selection S_t

    sources = _sources(tokenizer, pairs, args)
    previous_ar = MarianMTModel.from_pretrained(folder / f"round-{t - 1}" / "ar").eval()
    other_ar = MarianMTModel.from_pretrained(folder / f"round-{2 - t}" / "ar").eval()  # round 1 <-> round 0
    assert ROUTING_SAMPLE
    from_other = 0
    for i in ROUTING_SAMPLE:
        regenerated = _beam_candidates(previous_ar, sources[i], args, tokenizer)
        assert regenerated == candidates[i], i
        from_other += _beam_candidates(other_ar, sources[i], args, tokenizer) != candidates[i]
    assert from_other > 0  # AR_0 and AR_1 disagree, so the check above can tell them apart


def test_previous_selection_routes_round_1_selection_to_round_2_nat(previous_selection_run):
    folder, _, metrics, seen = previous_selection_run
    round_1 = load_from_disk(str(folder / "round-1" / "data"))
    round_2 = load_from_disk(str(folder / "round-2" / "data"))
    one_best_1, one_best_2 = [c[0] for c in round_1["candidate_ids"]], [c[0] for c in round_2["candidate_ids"]]
    assert list(round_1["nat_target_ids"]) == one_best_1 == seen["nat", 1]  # round 1: plain KD
    assert list(round_2["nat_target_ids"]) == list(round_1["selected_ids"]) == seen["nat", 2]
    assert list(round_2["nat_target_ids"]) != one_best_2  # not the one_best routing
    assert metrics["round-1"]["em/selection_differs_from_1best"] > 0  # S_1 differs from Y_1 somewhere


def test_previous_selection_cm_is_measured_on_the_previous_selection(previous_selection_run, tokenizer, pairs):
    folder, args, _, _ = previous_selection_run
    recorded = json.loads((folder / "round-2" / "metrics.json").read_text())["em/cm"]
    targets = list(load_from_disk(str(folder / "round-1" / "data"))["selected_ids"])
    sources = _sources(tokenizer, pairs, args)
    nat = _nat(folder, 2)
    recomputed = corpus_multimodality([reference_log_likelihood(nat, s, y) for s, y in zip(sources, targets)])
    assert recorded == pytest.approx(recomputed, abs=1e-4)


def test_every_trained_ar_keeps_its_decoder_start_row_zero(one_best_run):
    """Marian ARs start decoding from <pad>; the trainer holds that row at zero (as Marian and CTranslate2 do), so
    the stock CTranslate2 conversion of any round's AR decodes like generate()."""
    output_dir = one_best_run[0]
    for t in (0, 1, 2):
        ar = MarianMTModel.from_pretrained(output_dir / f"round-{t}" / "ar")
        row = ar.get_decoder().embed_tokens.weight[ar.config.decoder_start_token_id]
        assert ar.config.decoder_start_token_id == ar.config.pad_token_id
        assert not bool(row.any())
