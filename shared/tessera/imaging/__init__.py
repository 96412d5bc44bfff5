"""Image operations every entry point shares, numpy and Pillow only: decoding (`decode`), ink
cleaning (`ink`), MNIST normalization (`normalize`) and connected components."""
