"""The packing policy's invariants, as properties over arbitrary file sets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dsmount.workspace.packing import plan_packs

files_st = st.dictionaries(
    st.text(alphabet="abc/", min_size=1, max_size=6), st.integers(0, 5000), max_size=60
)


@given(files_st, st.integers(1, 3000), st.integers(1, 8000))
def test_every_file_is_placed_once_in_path_order(
    files: dict[str, int], threshold: int, pack_size: int
) -> None:
    items = list(files.items())
    plan = plan_packs(items, path=lambda f: f[0], size=lambda f: f[1], threshold=threshold,
                      pack_size=pack_size)
    packed = [f for pack in plan.packs for f in pack]
    assert sorted(packed + plan.loose) == sorted(items)
    assert packed == sorted(packed) and plan.loose == sorted(plan.loose)
    assert all(size < threshold for _, size in packed)
    assert all(size >= threshold for _, size in plan.loose)
    for pack in plan.packs:
        assert pack
        assert len(pack) == 1 or sum(size for _, size in pack) <= pack_size


def test_small_files_of_a_directory_share_a_pack() -> None:
    items = [(f"train/{i:03d}.jpg", 100 * 1024) for i in range(300)] + [("big.bin", 5 << 20)]
    plan = plan_packs(items, path=lambda f: f[0], size=lambda f: f[1])
    assert plan.loose == [("big.bin", 5 << 20)]
    assert [len(p) for p in plan.packs] == [300]  # 300 x 100 KiB = 29.3 MiB: one 32 MiB pack
