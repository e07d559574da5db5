"""Text as sequences and trees: SST sentiment, arithmetic on syntax trees, the character language model."""
