"""The Gaussian-process layer: kernels, kernel terms, sparse points, the streamed solver.

* :mod:`gapkit.gp.kernels`: the normalised dot-product kernel and design rows;
* :mod:`gapkit.gp.terms`: additive kernels over several descriptors ("2b+SOAP");
* :mod:`gapkit.gp.sparsify`: sparse-point selection (CUR, random, FPS);
* :mod:`gapkit.gp.solver`: streaming QR, evidence and predictive variance (pure linear algebra);
* :mod:`gapkit.gp.streaming`: training rows streamed in chunks (serial, joblib, Dask).
"""
