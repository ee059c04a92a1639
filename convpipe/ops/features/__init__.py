"""Feature ops: tables of detections and statistics (Parquet), filter banks. One module per op:
:mod:`.peaks`, :mod:`.filter_bank`, :mod:`.blobs`, :mod:`.match_template` (with :mod:`.ncc`), :mod:`.stats`;
:mod:`.frames` holds where a padded block lies in the whole array.

Tables hold one column per axis in global voxel coordinates plus the named values. A tile reports only
the rows in its core, so nothing is lost or doubled at tile borders (see ``tiles._owned_rows``); ops whose
rows combine across tiles (whole-plane statistics, blob pruning) define ``merge_rows``, which the table sink
calls once on all the tiles' rows at the end of a run.

Where the whole array's edges are
---------------------------------
``blobs`` and ``match_template`` must know where the whole array ends inside a padded block (skimage pads
its LoG by ``reflect`` but takes local maxima with ``nearest``; template matching pads with zeros but its
peaks use ``nearest``). They ask the engine for global coordinates (``wants_coords``) and pad with
``constant`` NaN: positions before the array are known from the coordinates, positions after it are the
trailing all-NaN hyperplanes of the halo. (An input with a whole NaN row/plane right before the array's end
is therefore not supported by these two ops; the oracle is NaN there anyway.)
"""
