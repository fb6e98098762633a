import BlockDiffusion
Runtime.prepareBLAS()
