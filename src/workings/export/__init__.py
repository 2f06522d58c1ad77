"""Export and hand-in: a run's adapter or merged model as a folder with its model card, sent to the Hub or Kaggle."""
