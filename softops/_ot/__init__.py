"""The optimal-transport family (private): SOFT top-k, Sinkhorn and the sorted-anchor Newton.

``ops`` (the public ops' jitted bodies), ``topk_rows`` (the row kernels), ``mask_root`` (the
two-anchor mask's root find and derivative), ``newton`` and ``newton_loop`` (semi-dual Newton onto
sorted anchors), ``sinkhorn``, ``hard_topk`` (straight-through values), ``permutation`` (soft
permutations on sorted anchors). Imports only the shared floor.
"""
