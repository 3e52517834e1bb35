"""The leaf every normalisation layer builds on: shapes, statistics and the caches.

Nothing here imports from the rest of normlab. Both backends -- the NumPy reference
(:mod:`normlab.reference`) and the numba kernels (:mod:`normlab.kernels`) -- import only this
package, and :mod:`normlab.functional` chooses between them, so no import runs back up.
"""
