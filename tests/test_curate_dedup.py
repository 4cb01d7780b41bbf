"""MinHash signatures, the LSH index, the dedup decisions and the labelled near-duplicate set."""

import random

import numpy as np
import pytest

from lmchain.curate.dedup import HISTORY, Decontaminator, Deduper, history_owner
from lmchain.curate.minhash import LshIndex, MinHasher, candidate_probability, shingle_words
from lmchain.curate.neardup_eval import band_pairs, edited_copy, jaccard, labelled_set, ngram_set, scores, true_pairs

VOCAB = ("river mountain forest valley city harbour bridge tower garden market school station library "
         "museum castle island desert meadow canyon glacier").split()


def random_doc(rng, n=80):
    return " ".join(rng.choice(VOCAB) + str(rng.randrange(50)) for _ in range(n))


def test_shingle_words_fold_case_punctuation_and_digits():
    assert shingle_words("The U.S. had 3,500 cats!") == ["the", "u", "s", "had", "0", "0", "cats"]


def test_signature_agreement_estimates_jaccard():
    rng = random.Random(0)
    base = " ".join(f"w{rng.randrange(10**6)}" for _ in range(400))
    copy = edited_copy(base, 0.7, rng)
    true = jaccard(ngram_set(base), ngram_set(copy))
    sigs = MinHasher(bands=32, rows=8).signatures([base, copy])  # 256 functions: sd about 0.03
    assert abs((sigs[0] == sigs[1]).mean() - true) < 0.1
    assert sigs.dtype == np.uint32 and sigs.shape == (2, 256)


def test_signatures_are_deterministic_and_independent_of_batching():
    texts = [random_doc(random.Random(i)) for i in range(30)] + ["", "one two"]
    m = MinHasher()
    whole = m.signatures(texts)
    assert np.array_equal(whole, np.concatenate([m.signatures(texts[:7]), m.signatures(texts[7:])]))
    assert np.array_equal(whole, MinHasher().signatures(texts))
    assert not np.array_equal(whole, MinHasher(seed=2).signatures(texts))


def test_candidate_probability_with_the_defaults_catches_nearly_all_pairs_above_08():
    # 16 x 8 casts a wide net (verification by signature agreement then removes false candidates)
    assert candidate_probability(0.8, 16, 8) == pytest.approx(0.94, abs=0.01)
    assert candidate_probability(0.6, 16, 8) < 0.25 and candidate_probability(0.5, 16, 8) < 0.07


def test_lsh_index_returns_each_bands_smallest_owner_across_segments():
    index = LshIndex(bands=2)
    index.add(np.array([[1, 2], [3, 4]], dtype=np.uint64), np.array([10, 11]))
    index.add(np.array([[5, 6]], dtype=np.uint64), np.array([12]))
    index.add(np.array([[7, 4]], dtype=np.uint64), np.array([9]))
    got = index.lookup_all(np.array([[0, 2], [3, 0], [8, 9], [0, 4], [5, 6]], dtype=np.uint64))
    assert got.tolist() == [[-1, 10], [11, -1], [-1, -1], [-1, 9], [12, 12]]
    assert len(index) == 4


def dedup_inputs(m, texts):
    sigs = m.signatures(texts)
    return [hash(t) for t in texts], m.band_keys(sigs), sigs  # any stable exact key works here


def test_deduper_keeps_the_first_of_a_cluster_and_only_indexes_kept_documents():
    m = MinHasher()
    rng = random.Random(1)
    a = random_doc(rng)
    texts = [a, a.replace(a.split()[40], "changed", 1), random_doc(rng), a]
    exact, keys, sigs = dedup_inputs(m, texts)
    d = Deduper(exact=True, near=True, bands=m.bands, width=sigs.shape[1], threshold=0.8)
    assert d.check(exact[:2], keys[:2], [0, 1], sigs[:2]) == [None, ("near_duplicate", 0)]
    assert d.check(exact[2:], keys[2:], [2, 3], sigs[2:]) == [None, ("exact_duplicate", 0)]
    assert len(d.lsh) == 2  # documents 0 and 2


def test_verification_rejects_candidates_below_the_threshold():
    m = MinHasher(bands=40, rows=2)  # a very wide net: pairs at J ~0.6 are candidates
    rng = random.Random(2)
    a = " ".join(f"w{rng.randrange(10**6)}" for _ in range(300))
    b = edited_copy(a, 0.6, rng)
    exact, keys, sigs = dedup_inputs(m, [a, b])
    assert set(keys[0].tolist()) & set(keys[1].tolist())
    plain = Deduper(True, True, m.bands)
    assert plain.check(exact, keys, [0, 1], sigs) == [None, ("near_duplicate", 0)]
    verified = Deduper(True, True, m.bands, sigs.shape[1], threshold=0.8)
    assert verified.check(exact, keys, [0, 1], sigs) == [None, None]


def test_history_is_read_back_and_own_run_is_skipped(tmp_path):
    m = MinHasher()
    texts = [random_doc(random.Random(i)) for i in range(3)]
    _, keys, sigs = dedup_inputs(m, texts)
    first = Deduper(True, True, m.bands, sigs.shape[1], 0.8)
    first.check([1, 2, 3], keys, [0, 1, 2], sigs)
    first.save_history(tmp_path, "run1", "sig")
    later = Deduper(True, True, m.bands, sigs.shape[1], 0.8)
    assert later.load_history(tmp_path, "run2", "sig") == 3
    _, keys2, sigs2 = dedup_inputs(m, [texts[0], texts[1] + " extra"])
    assert later.check([1, 99], keys2, [0, 1], sigs2) == [("exact_duplicate", HISTORY),
                                                          ("near_duplicate", history_owner(1))]
    assert Deduper(True, True, m.bands).load_history(tmp_path, "run1", "sig") == 0
    assert Deduper(True, True, m.bands).load_history(tmp_path, "run2", "other settings") == 0


def test_decontaminator_on_13_grams():
    eval_text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    d = Decontaminator([eval_text, "Tiny eval."])
    assert d({"text": "Prefix. ONE two three four five six seven eight nine ten eleven twelve thirteen!"}) \
        == "decontaminated"
    assert d({"text": "one two three four five six seven eight nine ten eleven twelve"}) is None
    assert d({"text": "tiny  eval"}) == "decontaminated" and d({"text": "a tiny eval"}) is None


def test_near_duplicate_quality_on_a_labelled_set():
    rng = random.Random(3)
    bases = [random_doc(rng, 120) for _ in range(60)]
    texts, family = labelled_set(bases, copies_per_base=4, seed=5)
    truth, sims = true_pairs(texts, family, 0.8)
    assert len(truth) > 40 and any(s < 0.6 for s in sims.values())
    m = MinHasher()
    sigs = m.signatures(texts)
    candidates = band_pairs(m.band_keys(sigs))
    verified = {p for p in candidates if (sigs[p[0]] == sigs[p[1]]).mean() >= 0.8}
    plain, checked = scores(candidates, truth, texts), scores(verified, truth, texts)
    assert plain["recall"] >= 0.9 and checked["precision"] > plain["precision"] and checked["f1"] >= 0.8
    confident = {p for p, s in sims.items() if s >= 0.92}
    assert confident <= candidates  # P(miss) < 1e-6 per pair at J >= 0.92
