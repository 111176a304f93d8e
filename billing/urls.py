from django.urls import path

from billing import api

urlpatterns = [
    path("credits/balance", api.BalanceView.as_view()),
    path("credits/add", api.CreditsAddView.as_view()),
    path("credits/transactions", api.TransactionsView.as_view()),
]
