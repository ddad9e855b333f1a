"""`dicomflow send`: a batch sender for folders and zip files, over C-STORE or STOW-RS, to any archive."""
