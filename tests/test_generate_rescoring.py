"""NAT generate() with a length beam and AR rescoring keeps the candidate the AR scores best."""

import pytest
import torch

from em_nat.modeling.decoding import ar_rescore, length_candidates


def test_generate_with_rescoring_keeps_the_best_rescored_candidate(nat, tokenizer, pairs):
    from em_nat import build_ar_model

    torch.manual_seed(3)
    ar = build_ar_model(tokenizer, nat.config).eval()
    pad = tokenizer.pad_token_id
    enc = tokenizer([pairs[0][0], pairs[7][0]], return_tensors="pt", padding=True)
    predicted = nat.generate(**enc, return_dict_in_generate=True).lengths
    out = nat.generate(**enc, length_beam=5, rescorer=ar, rescore_alpha=1.0, return_dict_in_generate=True)
    for b in range(2):
        source = {k: v[b : b + 1, : int(enc["attention_mask"][b].sum())] for k, v in enc.items()}
        window = length_candidates(predicted[b : b + 1], 5, 1, nat.config.max_position_embeddings)[0]
        best = None
        for length in window.tolist():  # each length candidate alone, then scored by the AR
            cand = nat.generate(**source, min_length=length, max_length=length)
            _, score = ar_rescore(
                ar, source["input_ids"], None, cand[:, None], pad, tokenizer.eos_token_id, pad, alpha=1.0
            )
            if best is None or score.item() > best[0]:
                best = (score.item(), cand[0])
        length = int(out.lengths[b])
        assert out.sequences[b, :length].tolist() == best[1].tolist()
        assert out.sequences_scores[b].item() == pytest.approx(best[0], abs=1e-4)


def test_a_rescorer_of_another_vocabulary_is_refused(nat, tokenizer, pairs):
    """An AR on another tokenizer would rank other words: refused before any decoding, naming the difference."""
    from transformers import MarianConfig, MarianMTModel

    enc = tokenizer([pairs[0][0]], return_tensors="pt")
    sizes = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2)
    sizes.update(encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    bigger = MarianMTModel(MarianConfig(vocab_size=nat.config.vocab_size + 7, **sizes, **special))
    with pytest.raises(ValueError, match=f"it has {nat.config.vocab_size + 7} token embeddings, the NAT"):
        nat.generate(**enc, length_beam=3, rescorer=bigger)
    other_eos = MarianMTModel(
        MarianConfig(vocab_size=nat.config.vocab_size, **sizes, **{**special, "eos_token_id": 5})
    )
    with pytest.raises(ValueError, match="its eos_token_id is 5, the NAT's"):
        nat.generate(**enc, length_beam=3, rescorer=other_eos)


def test_rescore_top_k_rescores_only_the_nats_best_candidates(nat, tokenizer, pairs):
    """rescore_top_k=k: the AR ranks only the k candidates the NAT scores best; k >= length_beam changes nothing."""
    from em_nat import build_ar_model

    torch.manual_seed(3)
    ar = build_ar_model(tokenizer, nat.config).eval()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    enc = tokenizer([pairs[0][0], pairs[7][0]], return_tensors="pt", padding=True)
    predicted = nat.generate(**enc, return_dict_in_generate=True).lengths
    out = nat.generate(**enc, length_beam=5, rescorer=ar, rescore_top_k=2, return_dict_in_generate=True)
    for b in range(2):
        source = {k: v[b : b + 1, : int(enc["attention_mask"][b].sum())] for k, v in enc.items()}
        window = length_candidates(predicted[b : b + 1], 5, 1, nat.config.max_position_embeddings)[0].tolist()
        alone = [nat.generate(**source, min_length=n, max_length=n, return_dict_in_generate=True) for n in window]
        nat_best_two = sorted(alone, key=lambda o: -o.sequences_scores.item())[:2]
        rescored = [
            (ar_rescore(ar, source["input_ids"], None, o.sequences[:, None], pad, eos, pad, alpha=0.6)[1].item(), o)
            for o in nat_best_two
        ]
        score, best = max(rescored, key=lambda pair: pair[0])
        length = int(out.lengths[b])
        assert out.sequences[b, :length].tolist() == best.sequences[0].tolist()
        assert out.sequences_scores[b].item() == pytest.approx(score, abs=1e-4)
    every = nat.generate(**enc, length_beam=5, rescorer=ar, return_dict_in_generate=True)
    same = nat.generate(**enc, length_beam=5, rescorer=ar, rescore_top_k=5, return_dict_in_generate=True)
    assert same.sequences.tolist() == every.sequences.tolist()
    with pytest.raises(ValueError, match="rescore_top_k must be an integer >= 1 or None, got 0"):
        nat.generate(**enc, length_beam=5, rescorer=ar, rescore_top_k=0)
