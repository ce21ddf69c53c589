"""StorageBlocks: aligned boxes read and written file by file equal CloudVolume's cutouts and uploads.

Real volumes written by CloudVolume (raw, compressed_segmentation; gzip and not;
an offset and a partial last storage chunk; 3 float32 channels; mip 1; sharded), on a local
folder, s3 (moto) and gs (fake-gcs-server).
"""
import numpy as np
import pytest
from cloudfiles import CloudFiles
from cloudvolume import CloudVolume

from beam_ingest.inputs.storage_blocks import MissingStorageChunk, StorageBlocks

SIZE, OFFSET, STORAGE = (40, 36, 20), (3, 5, 7), (16, 16, 8)  # last storage chunks: 8, 4, 4 voxels


def make_volume(url, encoding="raw", dtype="uint64", channels=1, compress="gzip", sharded=None):
    rng = np.random.default_rng(7)
    info = CloudVolume.create_new_info(
        num_channels=channels, layer_type="image" if dtype == "float32" else "segmentation", data_type=dtype,
        encoding=encoding, resolution=[4, 4, 40], voxel_offset=list(OFFSET), volume_size=list(SIZE),
        chunk_size=list(STORAGE), compressed_segmentation_block_size=[8, 8, 8])
    if sharded:  # the data encoding of the shard files: "raw" or "gzip"
        from cloudvolume.datasource.precomputed.sharding import ShardingSpecification
        info["scales"][0]["sharding"] = ShardingSpecification(
            "neuroglancer_uint64_sharded_v1", preshift_bits=0, hash="identity", minishard_bits=2, shard_bits=0,
            minishard_index_encoding="gzip", data_encoding=sharded).to_dict()
    cv = CloudVolume(url, info=info, progress=False, compress=compress)
    cv.commit_info()
    if dtype == "float32":
        data = rng.random(SIZE + (channels,), dtype=np.float32)
    else:
        data = (rng.integers(0, 50, SIZE + (channels,)) << (33 if dtype == "uint64" else 20)).astype(dtype)
    cv[OFFSET[0]:OFFSET[0] + SIZE[0], OFFSET[1]:OFFSET[1] + SIZE[1], OFFSET[2]:OFFSET[2] + SIZE[2]] = data
    return CloudVolume(url, progress=False, fill_missing=False, bounded=False, cache=False), data


def boxes():
    o = np.asarray(OFFSET)
    yield o, o + STORAGE                                   # one storage file
    yield o + (16, 0, 8), o + (40, 36, 20)                 # up to the partial last files
    yield o, o + SIZE                                      # all of it


@pytest.mark.parametrize("encoding,dtype,channels,compress", [
    ("raw", "uint64", 1, "gzip"), ("raw", "uint32", 1, None), ("compressed_segmentation", "uint64", 1, "gzip"),
    ("raw", "float32", 3, None), ("compresso", "uint64", 1, None), ("crackle", "uint64", 1, None)])
def test_reads_equal_cloudvolume_cutouts(tmp_path, encoding, dtype, channels, compress):
    cv, data = make_volume(f"file://{tmp_path}/v", encoding, dtype, channels, compress)
    blocks = StorageBlocks(cv)
    assert blocks.fast
    for start, stop in boxes():
        got = blocks.read(start, stop)
        want = np.asarray(cv[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]])
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
        assert np.array_equal(got, data[tuple(slice(a - s, b - s) for a, b, s in zip(start, stop, OFFSET))])
    assert blocks.files_read == 1 + 2 * 3 * 2 + 3 * 3 * 3


@pytest.mark.parametrize("sharded", [None, "gzip"])
def test_reads_on_object_storage(storage_url, sharded, tmp_path):
    if sharded:  # CloudVolume's sharded upload to s3 passes cache_control=True, which boto3 refuses: copied
        _, data = make_volume(f"file://{tmp_path}/v", "compressed_segmentation", compress=None, sharded=sharded)
        CloudFiles(f"file://{tmp_path}/v").transfer_to(storage_url + "/v")
        cv = CloudVolume(storage_url + "/v", progress=False, fill_missing=False, bounded=False, cache=False)
    else:
        cv, data = make_volume(storage_url + "/v", "compressed_segmentation")
    blocks = StorageBlocks(cv)
    start, stop = np.asarray(OFFSET), np.asarray(OFFSET) + SIZE
    assert np.array_equal(blocks.read(start, stop), data)
    assert blocks.files_read == 3 * 3 * 3 and blocks.sharded == bool(sharded)


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
def test_unaligned_boxes_are_cropped_from_whole_files(tmp_path, encoding):
    cv, data = make_volume(f"file://{tmp_path}/v", encoding)
    blocks = StorageBlocks(cv)
    for lo, hi, files in (((1, 1, 1), (17, 16, 8), 2), ((15, 3, 6), (39, 36, 20), 3 * 3 * 3),
                          ((20, 20, 10), (21, 21, 11), 1)):
        start, stop = np.asarray(OFFSET) + lo, np.asarray(OFFSET) + hi
        before = blocks.files_read
        assert np.array_equal(blocks.read(start, stop), data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        assert blocks.files_read - before == files


def test_boxes_outside_the_volume_go_through_cloudvolume(tmp_path):
    cv, data = make_volume(f"file://{tmp_path}/v")
    blocks = StorageBlocks(cv)
    start = np.asarray(OFFSET) - 2  # reaches outside the volume: CloudVolume pads it (unbounded)
    got = blocks.read(start, start + (10, 10, 10))
    assert blocks.files_read == 0 and np.array_equal(got[2:, 2:, 2:, 0], data[:8, :8, :8, 0])


@pytest.mark.parametrize("encoding,data_encoding", [("raw", "gzip"), ("compressed_segmentation", "raw")])
def test_sharded_volumes_are_read_chunk_by_chunk(tmp_path, encoding, data_encoding):
    cv, data = make_volume(f"file://{tmp_path}/s", encoding, compress=None, sharded=data_encoding)
    blocks = StorageBlocks(cv)
    assert blocks.fast and blocks.sharded
    for start, stop in boxes():
        got = blocks.read(start, stop)
        assert np.array_equal(got, np.asarray(cv[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]))
        assert np.array_equal(got, data[tuple(slice(a - s, b - s) for a, b, s in zip(start, stop, OFFSET))])
    assert blocks.files_read == 1 + 2 * 3 * 2 + 3 * 3 * 3  # chunks, each its own byte range
    start, stop = np.asarray(OFFSET) + (15, 3, 6), np.asarray(OFFSET) + (39, 36, 20)  # unaligned: cropped
    assert np.array_equal(blocks.read(start, stop), data[15:39, 3:36, 6:20])


def test_a_chunk_missing_from_its_shard_is_named(tmp_path):
    from cloudvolume.datasource.precomputed.sharding import synthesize_shard_files
    cv, data = make_volume(f"file://{tmp_path}/s", compress=None, sharded="gzip")
    reader = cv.image.shard_reader(0)
    folder = CloudFiles(f"file://{tmp_path}/s/4_4_40")
    (name,) = [n for n in folder.list() if n.endswith(".shard")]
    chunks = reader.disassemble_shard(folder.get(name))
    del chunks[0]  # morton code 0: the first storage chunk
    for filename, content in synthesize_shard_files(reader.spec, chunks).items():
        folder.put(filename, content, compress=None, raw=True)
    start, stop = np.asarray(OFFSET), np.asarray(OFFSET) + SIZE
    with pytest.raises(MissingStorageChunk, match=r"storage chunk 3-19_5-21_7-15 is in no shard file under "
                                                  r"file://.*/s/4_4_40"):
        StorageBlocks(CloudVolume(f"file://{tmp_path}/s", progress=False, cache=False)).read(start, stop)
    got = StorageBlocks(CloudVolume(f"file://{tmp_path}/s", progress=False, cache=False), fill_missing=True).read(
        start, stop)
    assert not got[:16, :16, :8].any() and np.array_equal(got[16:], data[16:]) and np.array_equal(got[:, 16:],
                                                                                                  data[:, 16:])


def test_a_missing_storage_file_is_named(tmp_path):
    cv, _ = make_volume(f"file://{tmp_path}/v")
    CloudFiles(f"file://{tmp_path}/v/4_4_40").delete("19-35_21-37_15-23")
    with pytest.raises(MissingStorageChunk, match=r"v/4_4_40/19-35_21-37_15-23 does not exist"):
        StorageBlocks(cv).read(np.asarray(OFFSET), np.asarray(OFFSET) + SIZE)


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
def test_writes_equal_cloudvolume_uploads(storage_url, encoding):
    cv, data = make_volume(storage_url + "/v", encoding)
    ours, _ = make_volume(storage_url + "/w", encoding)
    rng = np.random.default_rng(3)
    region = rng.integers(0, 9, (24, 36, 12, 1)).astype(np.uint64)
    start = np.asarray(OFFSET) + (16, 0, 8)  # up to the partial last files
    StorageBlocks(ours).write(start, region, compress_level=1)
    cv[start[0]:start[0] + 24, start[1]:start[1] + 36, start[2]:start[2] + 12] = region
    fresh = CloudVolume(storage_url + "/w", progress=False)
    assert np.array_equal(np.asarray(fresh[:, :, :]), np.asarray(CloudVolume(storage_url + "/v", progress=False)[:, :, :]))
    names = sorted(n for n in CloudFiles(storage_url + "/w/4_4_40").list())
    assert names == sorted(n for n in CloudFiles(storage_url + "/v/4_4_40").list())
    stored = CloudFiles(storage_url + "/w/4_4_40").get(names[-1].removesuffix(".gz"), raw=True)
    assert stored[:2] == b"\x1f\x8b"  # gzip, as CloudVolume writes these encodings (here ISA-L's, level 1)


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
@pytest.mark.parametrize("order", ["F", "C"])
def test_mapped_writes_equal_writes_of_the_mapped_volume(storage_url, encoding, order):
    """write_mapped(labels, table) maps one storage file's block at a time: the same files,
    byte for byte, as writing table[labels]."""
    whole, _ = make_volume(storage_url + f"/whole-{order}", encoding)
    mapped, _ = make_volume(storage_url + f"/mapped-{order}", encoding)
    rng = np.random.default_rng(5)
    labels = np.asarray(rng.integers(0, 6, (24, 36, 12)).astype(np.uint16), order=order)
    table = rng.integers(1, 2 ** 62, 6, dtype=np.uint64)
    table[0] = 0
    start = np.asarray(OFFSET) + (16, 0, 8)  # up to the partial last files
    StorageBlocks(whole).write(start, table[labels][..., np.newaxis], compress_level=1)
    StorageBlocks(mapped).write_mapped(start, labels, table, compress_level=1)
    files = [CloudFiles(f"{storage_url}/{name}-{order}/4_4_40") for name in ("whole", "mapped")]
    names = sorted(files[0].list())
    assert len(names) == 27 and sorted(files[1].list()) == names
    contents = [{f["path"]: f["content"] for f in folder.get(names, raw=True)} for folder in files]
    assert contents[0] == contents[1]
    region = np.asarray(CloudVolume(storage_url + f"/mapped-{order}", progress=False)[
        start[0]:start[0] + 24, start[1]:start[1] + 36, start[2]:start[2] + 12])[..., 0]
    assert np.array_equal(region, table[labels])


def test_channel_writes_equal_cloudvolume_uploads(tmp_path):
    """Raw storage files hold x fastest, then y, z and the channel."""
    cv, _ = make_volume(f"file://{tmp_path}/v", dtype="float32", channels=3, compress=None)
    ours, _ = make_volume(f"file://{tmp_path}/w", dtype="float32", channels=3, compress=None)
    region = np.random.default_rng(6).random((24, 36, 12, 3), dtype=np.float32)
    start = np.asarray(OFFSET) + (16, 0, 8)
    StorageBlocks(ours).write(start, region)
    cv[start[0]:start[0] + 24, start[1]:start[1] + 36, start[2]:start[2] + 12] = region
    names = sorted(CloudFiles(f"file://{tmp_path}/v/4_4_40").list())
    contents = [{f["path"]: f["content"] for f in CloudFiles(f"file://{tmp_path}/{v}/4_4_40").get(names)}
                for v in ("v", "w")]  # uncompressed: CloudVolume gzips at level 9, we at ISA-L's 1
    assert len(contents[0]) == 27 and contents[0] == contents[1]


@pytest.mark.parametrize("isal", [True, False])
def test_gzip_bytes_are_gzip_and_repeatable(monkeypatch, isal):
    import gzip
    import time
    from beam_ingest.inputs.storage_blocks import gzip_bytes
    if not isal:
        monkeypatch.setitem(__import__("sys").modules, "isal", None)  # as where python-isal is not installed
    data = np.arange(50_000, dtype=np.uint64).tobytes() * 3
    first = gzip_bytes(data, 1)
    time.sleep(1.1)  # a timestamp in the header would differ now
    assert gzip.decompress(first) == data and gzip_bytes(data, 1) == first
    assert gzip_bytes(np.frombuffer(data, np.uint64), 1) == first  # an array's buffer, without a bytes copy
