"""The heads that read the decoder's hidden states: text classifiers, the
linear NER head and its tag schemes, and the pooling layers they share."""
