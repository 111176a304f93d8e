"""Staff insight page in the admin: daily credits and cost over 30 days for a team or an
organization, as a server-rendered inline SVG chart, plus the top job types and models."""

from datetime import UTC, datetime, time, timedelta

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import escape

from jobs import usage
from tenants.models import Organization, Team

DAYS = 30
WIDTH, HEIGHT, PAD = 760, 260, 40


def chart_svg(days: list[str], credits: list[float], costs: list[float]) -> str:
    """Bars for credits used per day, a line for cost (USD), each on its own scale."""
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = plot_w / max(len(days), 1)
    top_credits, top_cost = max(credits + [0.0]) or 1.0, max(costs + [0.0]) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="Daily credits used and cost" class="usage-chart">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<text x="{PAD}" y="{PAD - 12}" font-size="12" fill="#417690">credits used (max {top_credits:g})</text>',
        f'<text x="{WIDTH - PAD}" y="{PAD - 12}" font-size="12" fill="#c0392b" text-anchor="end">cost USD (max {top_cost:g})</text>',
    ]
    points = []
    for index, (day, value, cost) in enumerate(zip(days, credits, costs, strict=True)):
        x = PAD + index * step
        bar_h = plot_h * value / top_credits
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{HEIGHT - PAD - bar_h:.1f}" width="{max(step - 2, 1):.1f}" height="{bar_h:.1f}" '
            f'fill="#79aec8"><title>{escape(day)}: {value:g} credits, ${cost:g}</title></rect>'
        )
        points.append(f"{x + step / 2:.1f},{HEIGHT - PAD - plot_h * cost / top_cost:.1f}")
        if index % 5 == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - PAD + 16}" font-size="10" fill="#666">{escape(day[5:])}</text>'
            )
    if points:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


@staff_member_required
def insights(request: HttpRequest) -> HttpResponse:
    team = Team.objects.filter(id=request.GET.get("team", "")).first()
    organization = Organization.objects.filter(id=request.GET.get("organization", "")).first()
    if team is not None:
        team_ids, subject = [team.id], f"team {team.id}"
    elif organization is not None:
        team_ids, subject = list(organization.teams.values_list("id", flat=True)), f"organization {organization.id}"
    else:
        team_ids, subject = None, "all teams"
    end = timezone.now()
    start = datetime.combine((end - timedelta(days=DAYS - 1)).date(), time.min, tzinfo=UTC)
    summary, by_day = usage.usage(team_ids=team_ids, start=start, end=end, group_by="day")
    _, by_type = usage.usage(team_ids=team_ids, start=start, end=end, group_by="job_type")
    _, by_model = usage.usage(team_ids=team_ids, start=start, end=end, group_by="model")
    rows = {row["key"]: row for row in by_day}
    days = [(start + timedelta(days=offset)).date().isoformat() for offset in range(DAYS)]
    credits = [rows.get(day, {}).get("credits_used", 0.0) for day in days]
    costs = [rows.get(day, {}).get("cost_usd", 0.0) for day in days]
    context = {
        "title": f"Usage insights — {subject}",
        "subject": subject,
        "summary": summary,
        "chart": chart_svg(days, credits, costs),
        "top_job_types": sorted(by_type, key=lambda row: -row["credits_used"])[:10],
        "top_models": sorted(by_model, key=lambda row: -row["calls"])[:10],
        "teams": Team.objects.order_by("id")[:500],
        "organizations": Organization.objects.order_by("id")[:500],
        "selected_team": team.id if team else "",
        "selected_organization": organization.id if organization and not team else "",
        "days": DAYS,
    }
    return render(request, "admin/insights.html", context)
