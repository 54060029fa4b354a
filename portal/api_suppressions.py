"""REST API for the suppression list of the caller's tenant.

GET    /api/suppressions/?q=part     list (newest first, at most 1000)
POST   /api/suppressions/            {"entry": "a@example.net", "detail": "..."}
POST   /api/suppressions/import/     {"entries": ["a@example.net", "example.org"]}
DELETE /api/suppressions/<id>/       remove
"""

from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from portal.scoping import membership_of
from relay import suppression
from relay.models import Suppression

MAX_LIST = 1000
MAX_IMPORT = 10000


class SuppressionSerializer(serializers.ModelSerializer):
    kind = serializers.SerializerMethodField()

    class Meta:
        model = Suppression
        fields = ["id", "entry", "kind", "reason", "detail", "created_at"]
        read_only_fields = ["id", "kind", "reason", "created_at"]

    def get_kind(self, obj):
        return "domain" if obj.is_domain else "address"

    def validate_entry(self, value):
        try:
            return suppression.normalise_entry(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc))


class ImportSerializer(serializers.Serializer):
    entries = serializers.ListField(
        child=serializers.CharField(max_length=320, allow_blank=True),
        max_length=MAX_IMPORT,
        allow_empty=False,
    )


def _membership_or_error(request, change=False):
    """(membership, None) or (None, an error Response)."""
    membership = membership_of(request.user)
    if membership is None:
        return None, Response(
            {"detail": "You are not a member of any account."},
            status=status.HTTP_403_FORBIDDEN,
        )
    if change and not membership.may_edit:
        return None, Response(
            {"detail": "Your role lets you view, not change, this account."},
            status=status.HTTP_403_FORBIDDEN,
        )
    return membership, None


@api_view(["GET", "POST"])
def suppressions(request):
    membership, error = _membership_or_error(request, change=request.method == "POST")
    if error:
        return error
    if request.method == "GET":
        entries = Suppression.objects.filter(tenant=membership.tenant)
        query = request.query_params.get("q", "").strip().lower()
        if query:
            entries = entries.filter(entry__contains=query)
        return Response(SuppressionSerializer(entries[:MAX_LIST], many=True).data)

    serializer = SuppressionSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    entry, created = suppression.suppress(
        membership.tenant.pk,
        serializer.validated_data["entry"],
        Suppression.MANUAL,
        serializer.validated_data.get("detail", ""),
    )
    return Response(
        SuppressionSerializer(entry).data,
        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )


@api_view(["POST"])
def import_suppressions(request):
    membership, error = _membership_or_error(request, change=True)
    if error:
        return error
    serializer = ImportSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    added, existing, problems = suppression.import_entries(
        membership.tenant.pk, serializer.validated_data["entries"]
    )
    return Response(
        {
            "added": added,
            "already_listed": existing,
            "errors": [
                {"index": number - 1, "entry": text, "error": problem}
                for number, text, problem in problems
            ],
        }
    )


@api_view(["DELETE"])
def suppression_detail(request, pk):
    membership, error = _membership_or_error(request, change=True)
    if error:
        return error
    deleted, _ = Suppression.objects.filter(tenant=membership.tenant, pk=pk).delete()
    if not deleted:
        return Response({"detail": "No such entry."}, status=status.HTTP_404_NOT_FOUND)
    return Response(status=status.HTTP_204_NO_CONTENT)
