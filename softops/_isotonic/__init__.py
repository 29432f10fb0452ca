"""The isotonic family (private): exact PAV solvers and the soft sort/rank row kernels.

``blocks`` (block statistics and values), ``pav`` (the solvers: pooling rounds, stack PAV,
merge tree), ``merge_tree`` and ``dense`` (the parallel and loop-free solvers), ``rows`` (soft
sort, rank, projection and isotonic regression of rows ``[..., n]``), ``quantize`` (the exact
permutahedron ops built on them). Imports only the shared floor (``softops._checks``,
``softops._sharding``, ``softops._sort``, ``softops._straight_through``).
"""
